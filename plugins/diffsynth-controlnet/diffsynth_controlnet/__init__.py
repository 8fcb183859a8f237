"""diffsynth-controlnet: Qwen-Image ControlNets for diffsynth (family ``qwen-image-controlnet``).

The plugin entry point is :mod:`diffsynth_controlnet.plugin` (no torch at import). Library
functions are resolved lazily from their modules:

* ``load_controlnet_pipeline`` (:mod:`.loading`), ``QwenImageUnit_ControlNet`` (:mod:`.units`);
* ``load_controlnet``, ``new_controlnet``, ``attach_controlnets`` (:mod:`.models`);
* ``export_checkpoint`` (:mod:`.export`), ``canny`` (:mod:`.canny`),
  ``prepare_dataset`` (:mod:`.prepare`), ``build_tiny`` (:mod:`.tiny`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_controlnet_pipeline": "diffsynth_controlnet.loading",
    "QwenImageUnit_ControlNet": "diffsynth_controlnet.units",
    "ControlNetResiduals": "diffsynth_controlnet.pipeline",
    "load_controlnet": "diffsynth_controlnet.models",
    "new_controlnet": "diffsynth_controlnet.models",
    "attach_controlnets": "diffsynth_controlnet.models",
    "export_checkpoint": "diffsynth_controlnet.export",
    "canny": "diffsynth_controlnet.canny",
    "prepare_dataset": "diffsynth_controlnet.prepare",
    "build_tiny": "diffsynth_controlnet.tiny",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffsynth_controlnet' has no attribute {name!r}")
