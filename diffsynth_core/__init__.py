"""diffsynth-core: a diffusion-model trainer whose core knows no model.

Importing this package is cheap (no torch): the CLI's ``--help`` depends on it. The heavy
pieces live in submodules (``pipeline``, ``scheduler``, ``training``, ``data``) and are
imported where they are used.
"""

from __future__ import annotations

from .plugins import hookimpl
from .registry import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults

__version__ = "0.1.0"

__all__ = [
    "ComponentFiles",
    "FamilyOption",
    "ModelFamily",
    "TrainingDefaults",
    "__version__",
    "hookimpl",
]
