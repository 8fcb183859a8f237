"""diffsynth-core: a diffusion-model trainer whose core knows no model.

This module is the **public face**: every name a plugin may use is listed in ``__all__`` and
documented in docs/api.md. Plugins import from here only (``from diffsynth_core import
PipelineUnit``); a test fails when a package under ``plugins/`` or ``examples/`` imports from a
submodule. The submodules are the implementation and may change in any release.

Importing this package is cheap (no torch): the CLI's ``--help`` depends on it. Names whose
modules need torch resolve on first use (``__getattr__`` below), so registering a family
imports nothing heavy.

Versioning (``API_VERSION``, semver): while it is 0.x, a minor release may change the face and
a patch release does not; plugins declare ``diffsynth-core>=0.X,<0.(X+1)`` (the scaffold of
``diffsynth new-plugin`` writes that pin). From 1.0, only a major release may break it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BadSampleError,
    ConfigError,
    DatasetError,
    DiffSynthError,
    MissingDependencyError,
    ModelFileError,
    PluginError,
    TrainingError,
    UnknownFormatError,
    UnknownModelError,
)
from .plugins import hookimpl
from .registry import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults

__version__ = "0.1.0"
API_VERSION = "0.1.0"

# name -> the module that defines it; imported when the name is first used
_LAZY: dict[str, str] = {
    # pipelines, units, loading
    "BasePipeline": "diffsynth_core.pipeline",
    "PipelineUnit": "diffsynth_core.pipeline",
    "load_pipeline": "diffsynth_core.pipeline",
    "ModelConfig": "diffsynth_core.loading",
    "load_state_dict": "diffsynth_core.loading",
    "load_single_file": "diffsynth_core.single_file",
    "FlowMatchConfig": "diffsynth_core.scheduler",
    "FlowMatchScheduler": "diffsynth_core.scheduler",
    "get_plugin_manager": "diffsynth_core.plugins",
    "tiny_folder": "diffsynth_core.cli.run.presets",
    # LoRA formats and files
    "LoraFormat": "diffsynth_core.lora.formats",
    "LoraLayout": "diffsynth_core.lora.formats",
    "family_layout": "diffsynth_core.lora.formats",
    "export_comfyui": "diffsynth_core.lora.builtin_formats",
    "merge_lora": "diffsynth_core.lora.inject",
    "read_lora_file": "diffsynth_core.lora.inject",
    # training (the seed's API)
    "DiffusionTrainingModule": "diffsynth_core.training.module",
    "switch_pipe_to_training_mode": "diffsynth_core.training.module",
    "set_gradient_checkpointing": "diffsynth_core.training.module",
    "FlowMatchSFTLoss": "diffsynth_core.training.losses",
    "ModelLogger": "diffsynth_core.training.logger",
    "launch_training_task": "diffsynth_core.training.runner",
    # data
    "UnifiedDataset": "diffsynth_core.data",
    "Row": "diffsynth_core.data.metadata",
    "read_metadata": "diffsynth_core.data.metadata",
    "check_columns": "diffsynth_core.data.metadata",
    "scan_folder": "diffsynth_core.data.folder",
    "read_image": "diffsynth_core.data.images",
    "crop_and_resize": "diffsynth_core.data.images",
    "resolve_inside": "diffsynth_core.data.files",
    "save_video": "diffsynth_core.data.video",
    # command line
    "format_table": "diffsynth_core.cli.common",
    # the memory estimate
    "RealSize": "diffsynth_core.memory.spec",
    "Shape": "diffsynth_core.memory.spec",
}

__all__ = [  # sorted; every lazy name above and every eagerly imported one
    "API_VERSION",
    "BadSampleError",
    "BasePipeline",
    "ComponentFiles",
    "ConfigError",
    "DatasetError",
    "DiffSynthError",
    "DiffusionTrainingModule",
    "FamilyOption",
    "FlowMatchConfig",
    "FlowMatchSFTLoss",
    "FlowMatchScheduler",
    "LoraFormat",
    "LoraLayout",
    "MissingDependencyError",
    "ModelConfig",
    "ModelFamily",
    "ModelFileError",
    "ModelLogger",
    "PipelineUnit",
    "PluginError",
    "RealSize",
    "Row",
    "Shape",
    "TrainingDefaults",
    "TrainingError",
    "UnifiedDataset",
    "UnknownFormatError",
    "UnknownModelError",
    "__version__",
    "check_columns",
    "crop_and_resize",
    "export_comfyui",
    "family_layout",
    "format_table",
    "get_plugin_manager",
    "hookimpl",
    "launch_training_task",
    "load_pipeline",
    "load_single_file",
    "load_state_dict",
    "merge_lora",
    "read_image",
    "read_lora_file",
    "read_metadata",
    "resolve_inside",
    "save_video",
    "scan_folder",
    "set_gradient_checkpointing",
    "switch_pipe_to_training_mode",
    "tiny_folder",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffsynth_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return list(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see for the lazy names
    from .cli.common import format_table
    from .cli.run.presets import tiny_folder
    from .data import UnifiedDataset
    from .data.files import resolve_inside
    from .data.folder import scan_folder
    from .data.images import crop_and_resize, read_image
    from .data.metadata import Row, check_columns, read_metadata
    from .data.video import save_video
    from .loading import ModelConfig, load_state_dict
    from .lora.builtin_formats import export_comfyui
    from .lora.formats import LoraFormat, LoraLayout, family_layout
    from .lora.inject import merge_lora, read_lora_file
    from .memory.spec import RealSize, Shape
    from .pipeline import BasePipeline, PipelineUnit, load_pipeline
    from .plugins import get_plugin_manager
    from .scheduler import FlowMatchConfig, FlowMatchScheduler
    from .single_file import load_single_file
    from .training.logger import ModelLogger
    from .training.losses import FlowMatchSFTLoss
    from .training.module import (
        DiffusionTrainingModule,
        set_gradient_checkpointing,
        switch_pipe_to_training_mode,
    )
    from .training.runner import launch_training_task
