"""The ``diffsynth`` command line: one module per command group."""
