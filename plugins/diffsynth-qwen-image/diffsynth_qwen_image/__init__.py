"""diffsynth-qwen-image: the Qwen-Image model family for diffsynth.

``from diffsynth_qwen_image import QwenImagePipeline, ModelConfig`` gives the seed's API. The
names are resolved lazily so that the plugin entry point (``diffsynth_qwen_image.plugin``)
stays free of torch and diffusers imports.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "QwenImagePipeline": "diffsynth_qwen_image.pipeline",
    "QwenImageEditPipeline": "diffsynth_qwen_image.edit_pipeline",
    "ModelConfig": "diffsynth_core.loading",
    "build_tiny": "diffsynth_qwen_image.tiny",
}

__all__ = ["ModelConfig", "QwenImageEditPipeline", "QwenImagePipeline", "__version__", "build_tiny"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffsynth_qwen_image' has no attribute {name!r}")
