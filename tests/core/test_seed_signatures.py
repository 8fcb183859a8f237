"""The seed API keeps DiffSynth-Studio's positional order and keyword names.

A script ported from DiffSynth-Studio passes arguments by position
(``switch_pipe_to_training_mode(pipe, None, "dit", "to_q", 32, "lora.safetensors")``): each
function's leading parameters must be the seed's, in the seed's order, and our own extras
keyword-only after them. The table is DiffSynth-Studio's signatures (``self`` dropped).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from diffsynth_core.data.dataset import UnifiedDataset
from diffsynth_core.training.logger import ModelLogger
from diffsynth_core.training.module import DiffusionTrainingModule, switch_pipe_to_training_mode
from diffsynth_core.training.runner import launch_training_task

SEED = {
    "switch_pipe_to_training_mode": (
        "pipe", "trainable_models", "lora_base_model", "lora_target_modules", "lora_rank",
        "lora_checkpoint", "preset_lora_path", "preset_lora_model", "task",
    ),
    "DiffusionTrainingModule.trainable_modules": (),
    "DiffusionTrainingModule.trainable_param_names": (),
    "DiffusionTrainingModule.add_lora_to_model": (
        "model", "target_modules", "lora_rank", "lora_alpha", "upcast_dtype",
    ),
    "DiffusionTrainingModule.export_trainable_state_dict": ("state_dict", "remove_prefix"),
    "DiffusionTrainingModule.mapping_lora_state_dict": ("state_dict",),
    "DiffusionTrainingModule.transfer_data_to_device": ("data", "device", "torch_float_dtype"),
    "UnifiedDataset": (
        "base_path", "metadata_path", "repeat", "data_file_keys", "main_data_operator",
        "special_operator_map", "max_data_items",
    ),
    "UnifiedDataset.default_image_operator": (
        "base_path", "max_pixels", "height", "width", "height_division_factor",
        "width_division_factor",
    ),
    # the seed's 11th, fix_frame_rate, is not here: our frame_rate alone resamples
    "UnifiedDataset.default_video_operator": (
        "base_path", "max_pixels", "height", "width", "height_division_factor",
        "width_division_factor", "num_frames", "time_division_factor", "time_division_remainder",
        "frame_rate",
    ),
    "ModelLogger": (
        "output_path", "remove_prefix_in_ckpt", "state_dict_converter", "enable_tensorboard_log",
        "enable_swanlab_log", "swanlab_project", "enable_wandb_log", "wandb_project",
        "enable_csv_log",
    ),
    "launch_training_task": (
        "accelerator", "dataset", "model", "model_logger", "learning_rate", "weight_decay",
        "num_workers", "save_steps", "num_epochs", "enable_model_cpu_offload",
        "enable_optimizer_cpu_offload", "cpu_offload_split_threshold", "customized_optimizer",
        "args",
    ),
}  # fmt: skip

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "switch_pipe_to_training_mode": switch_pipe_to_training_mode,
    "UnifiedDataset": UnifiedDataset.__init__,
    "UnifiedDataset.default_image_operator": UnifiedDataset.default_image_operator,
    "UnifiedDataset.default_video_operator": UnifiedDataset.default_video_operator,
    "ModelLogger": ModelLogger.__init__,
    "launch_training_task": launch_training_task,
    "DiffusionTrainingModule.switch_pipe_to_training_mode": (
        DiffusionTrainingModule.switch_pipe_to_training_mode
    ),
    **{
        name: getattr(DiffusionTrainingModule, name.split(".")[1])
        for name in SEED
        if name.startswith("DiffusionTrainingModule.")
    },
}


def _positional(function: Callable[..., Any]) -> tuple[list[str], list[inspect.Parameter]]:
    params = list(inspect.signature(function).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds], params


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_positional_order_is_the_seeds(name: str) -> None:
    seed = SEED[name] if name in SEED else SEED[name.removeprefix("DiffusionTrainingModule.")]
    positional, params = _positional(FUNCTIONS[name])
    assert positional == list(seed)  # the seed's, in its order, and nothing more by position
    extras = [p for p in params if p.name not in seed and p.kind is not p.VAR_KEYWORD]
    assert all(p.kind is p.KEYWORD_ONLY for p in extras), [p.name for p in extras]


def test_seed_positional_calls_bind_as_in_the_seed() -> None:
    runner = inspect.signature(launch_training_task).bind("acc", "data", "model", "log", 1e-5, 0.01)
    assert runner.arguments["weight_decay"] == 0.01 and "num_epochs" not in runner.arguments
    logger = inspect.signature(ModelLogger.__init__).bind("self", "out", "pipe.dit.", str.upper)
    assert logger.arguments["state_dict_converter"] is str.upper


def test_a_positional_lora_checkpoint_lands_in_lora_checkpoint() -> None:
    bound = inspect.signature(switch_pipe_to_training_mode).bind(
        "pipe", None, "dit", "to_q", 4, "lora.safetensors"
    )
    assert bound.arguments["lora_checkpoint"] == "lora.safetensors"
    assert "lora_dtype" not in bound.arguments
