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

from diffsynth_core.training.module import DiffusionTrainingModule, switch_pipe_to_training_mode

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
    "DiffusionTrainingModule.transfer_data_to_device": ("data", "device", "torch_float_dtype"),
}  # fmt: skip

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "switch_pipe_to_training_mode": switch_pipe_to_training_mode,
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


def test_a_positional_lora_checkpoint_lands_in_lora_checkpoint() -> None:
    bound = inspect.signature(switch_pipe_to_training_mode).bind(
        "pipe", None, "dit", "to_q", 4, "lora.safetensors"
    )
    assert bound.arguments["lora_checkpoint"] == "lora.safetensors"
    assert "lora_dtype" not in bound.arguments
