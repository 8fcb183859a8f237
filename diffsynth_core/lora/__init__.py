"""LoRA: injection and merging (``inject``), reading files (``files``), formats and layouts
(``formats``) and the built-in formats (``builtin_formats``).

Import the pieces from their modules; this package stays empty so that importing one piece
does not import all of them (``formats`` is torch-free and read by ``diffsynth --help``).
"""
