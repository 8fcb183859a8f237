"""diffsynth-flux: FLUX.1 [dev] and [schnell] for diffsynth (families ``flux-dev``, ``flux-schnell``).

``from diffsynth_flux import FluxPipeline`` gives the pipeline; names are resolved lazily so
the plugin entry point (``diffsynth_flux.plugin``) stays free of torch and diffusers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FluxPipeline": "diffsynth_flux.pipeline",
    "build_tiny": "diffsynth_flux.tiny",
}

__all__ = ["FluxPipeline", "__version__", "build_tiny"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffsynth_flux' has no attribute {name!r}")
