"""Every name this plugin takes from diffsynth-core, in one place.

All of them come from the core's public face (``docs/api.md``); this module is the only one
that imports diffsynth_core. The registration names are imported eagerly (they are torch-free, and
``plugin.py`` / ``family.py`` must stay cheap); the rest import torch and are resolved on first
use through ``__getattr__``.
"""

from __future__ import annotations

import importlib
from typing import Any

from diffsynth_core import (
    ComponentFiles,
    ConfigError,
    FamilyOption,
    LoraLayout,
    ModelFamily,
    ModelFileError,
    RealSize,
    Shape,
    TrainingDefaults,
    hookimpl,
)

# names whose core modules import torch: resolved from the face when first asked for
_LAZY = {
    "ModelConfig": "diffsynth_core",
    "BasePipeline": "diffsynth_core",
    "PipelineUnit": "diffsynth_core",
    "FlowMatchConfig": "diffsynth_core",
    "FlowMatchScheduler": "diffsynth_core",
    "set_gradient_checkpointing": "diffsynth_core",
    "merge_lora": "diffsynth_core",
    "read_lora_file": "diffsynth_core",
    "load_single_file": "diffsynth_core",
}

__all__ = [
    "ComponentFiles",
    "ConfigError",
    "FamilyOption",
    "LoraLayout",
    "ModelFamily",
    "ModelFileError",
    "RealSize",
    "Shape",
    "TrainingDefaults",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffsynth_flux._core' has no attribute {name!r}")
