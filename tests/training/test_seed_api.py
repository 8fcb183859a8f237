"""The seed's parameters that ours did not have do what DiffSynth-Studio's do (or refuse)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from accelerate import Accelerator
from safetensors.torch import load_file

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.logger import ModelLogger
from diffsynth_core.training.runner import launch_training_task

from .conftest import toy_dataset, toy_module


def _logger(out: Path, **kwargs: Any) -> ModelLogger:
    return ModelLogger(out, "pipe.dit.", save_every_epoch=False, **kwargs)


def test_seed_positional_arguments_and_state_dict_converter(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    module, dataset = toy_module(tiny_toy), toy_dataset(tmp_path / "data")
    renamed = _logger(
        tmp_path / "run", state_dict_converter=lambda sd: {"x." + k: v for k, v in sd.items()}
    )
    # learning_rate, weight_decay, num_workers, save_steps, num_epochs: by position, as in the seed
    result = launch_training_task(
        Accelerator(cpu=True), dataset, module, renamed, 1e-3, 0.0, 0, 2, 1, progress=False
    )
    assert result.steps == 4  # one epoch of 4 samples, not 0.0 epochs
    saved = sorted(p.name for p in (tmp_path / "run").glob("*.safetensors"))
    assert saved == ["final.safetensors", "step-000002.safetensors", "step-000004.safetensors"]
    assert all(
        k.startswith("x.transformer_blocks.") for k in load_file(tmp_path / "run" / "final.safetensors")
    )


def test_an_argparse_namespace_wins_as_in_the_seed(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    args = argparse.Namespace(
        learning_rate=1e-3, weight_decay=0.0, dataset_num_workers=0, save_steps=None, num_epochs=2,
        customized_optimizer=None,
    )  # fmt: skip
    module, dataset = toy_module(tiny_toy), toy_dataset(tmp_path / "data")
    result = launch_training_task(
        Accelerator(cpu=True), dataset, module, _logger(tmp_path / "run"), args=args, progress=False
    )
    assert result.steps == 8  # num_epochs 2 from args, over the default 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"enable_model_cpu_offload": True}, "CPU offloading"),
        ({"save_steps": 2, "save_every_n_steps": 3}, "twice"),
    ],
)
def test_seed_options_we_do_not_have_are_refused(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path, kwargs: dict[str, Any], needle: str
) -> None:
    module, dataset = toy_module(tiny_toy), toy_dataset(tmp_path / "data")
    with pytest.raises(ConfigError, match=needle):
        launch_training_task(
            Accelerator(cpu=True), dataset, module, _logger(tmp_path / "run"), **kwargs
        )
    assert not (tmp_path / "run").exists()


def test_logger_refuses_wandb_and_swanlab(tmp_path: Path) -> None:
    for flag in ("enable_wandb_log", "enable_swanlab_log"):
        with pytest.raises(ConfigError, match="TensorBoard"):
            ModelLogger(tmp_path, **{flag: True})


def test_max_data_items_is_the_epoch_length(tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=4, max_data_items=6)
    assert len(dataset) == 6 and dataset.row_of(5) == 1
    assert len(dataset.target_sizes()) == 6
    with pytest.raises(ConfigError, match="max_data_items"):
        toy_dataset(tmp_path / "data", max_data_items=0)
