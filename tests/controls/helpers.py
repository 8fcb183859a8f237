"""Helpers of the controls tests: the toy training module, datasets, one-process training."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)  # tiny models: threads only add overhead and change float sums


def toy_module(tiny: Path, loss_fn: Callable[..., torch.Tensor] | None = None, seed: int = 0) -> Any:
    """A PipelineTrainingModule over the toy pipeline with LoRA rank 4 (seeded initialisation)."""
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    torch.manual_seed(seed)
    pipe = load_pipeline("toy", model_path=str(tiny))
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules="to_q,to_k,to_v,to_out", lora_rank=4
    )
    return PipelineTrainingModule(pipe, loss_fn or get_plugin_manager().get_loss("sft"))


def toy_dataset(folder: Path, n: int = 4, tags: bool = False, **kwargs: Any) -> Any:
    """``n`` 32x32 images; ``tags``: captions are comma tags ``tag0, tag1 ...`` (per row)."""
    from diffsynth_core.data import UnifiedDataset
    from diffsynth_core.testing import make_image_dataset

    if not (folder / "metadata.csv").exists():
        make_image_dataset(folder, n, 32)
        if tags:
            rows = [{"image": f"image_{i}.png", "prompt": ", ".join(f"tag{j}" for j in range(i + 3))} for i in range(n)]
            with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=["image", "prompt"])
                writer.writeheader()
                writer.writerows(rows)
    operator = UnifiedDataset.default_image_operator(folder, height=32, width=32)
    return UnifiedDataset(folder, folder / "metadata.csv", main_data_operator=operator, **kwargs)


def lora_weights(module: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def train(module: Any, dataset: Any, output: Path, learning_rate: float = 1e-3, **options: Any) -> Any:
    """launch_training_task on one CPU process, without the progress bar."""
    from accelerate import Accelerator

    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.runner import launch_training_task

    logger = ModelLogger(output, remove_prefix_in_ckpt="pipe.dit.", save_every_epoch=False)
    options.setdefault("progress", False)
    return launch_training_task(Accelerator(cpu=True), dataset, module, logger, learning_rate, **options)
