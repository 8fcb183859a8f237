"""Every name this plugin takes from diffsynth-core, in one place.

The core's public face (``docs/api.md``) does not exist yet; when it does, this module is the
only one to change. The registration names are imported eagerly (they are torch-free, and
``plugin.py`` / ``family.py`` must stay cheap); the rest import torch and are resolved on first
use through ``__getattr__``.
"""

from __future__ import annotations

import importlib
from typing import Any

from diffsynth_core import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults, hookimpl
from diffsynth_core.errors import ConfigError, ModelFileError
from diffsynth_core.lora_formats import LoraLayout

# name -> the core module that defines it (imported when first asked for)
_LAZY = {
    "ModelConfig": "diffsynth_core.loading",
    "BasePipeline": "diffsynth_core.pipeline",
    "PipelineUnit": "diffsynth_core.pipeline",
    "FlowMatchConfig": "diffsynth_core.scheduler",
    "FlowMatchScheduler": "diffsynth_core.scheduler",
    "set_gradient_checkpointing": "diffsynth_core.training.module",
    "merge_lora": "diffsynth_core.training.lora",
    "read_lora_file": "diffsynth_core.training.lora",
}

__all__ = [
    "ComponentFiles",
    "ConfigError",
    "FamilyOption",
    "LoraLayout",
    "ModelFamily",
    "ModelFileError",
    "TrainingDefaults",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffsynth_flux._core' has no attribute {name!r}")
