"""``diffsynth train``'s run assembly: config, family options, presets, the output lock, the
startup summary and :mod:`~diffsynth_core.cli.run.build`, which builds the engine's
pieces (``diffsynth_core.training``) from the options.

Import the pieces from their modules; this package stays empty so that importing one piece
does not import all of them (``diffsynth --help`` stays torch-free).
"""
