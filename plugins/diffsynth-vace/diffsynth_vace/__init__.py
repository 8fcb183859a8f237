"""diffsynth-vace: Wan2.1 VACE for diffsynth (families ``wan-vace`` and ``wan-vace-14b``).

Importing the package is cheap: ``WanVacePipeline`` and ``build_tiny`` (which pull in torch and
diffusers) are loaded on first access.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"WanVacePipeline": "pipeline", "build_tiny": "tiny"}

__all__ = ["WanVacePipeline", "__version__", "build_tiny"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
