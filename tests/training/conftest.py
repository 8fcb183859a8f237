"""Training-test helpers: toy datasets, toy training modules, weight comparison."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

# Tiny models: threads only add overhead, and a fixed count keeps float sums bit-identical
# between this process and the subprocesses (which get OMP_NUM_THREADS=1).
torch.set_num_threads(1)

TARGETS = "to_q,to_k,to_v,to_out"


def toy_module(
    tiny: Path, loss_fn: Callable[..., torch.Tensor] | None = None, seed: int = 0, **extra: Any
) -> Any:
    """A PipelineTrainingModule over the toy pipeline with LoRA rank 4 (seeded initialisation)."""
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    torch.manual_seed(seed)
    pipe = load_pipeline("toy", model_path=str(tiny))
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=4
    )
    loss = loss_fn or get_plugin_manager().get_loss("sft")
    return PipelineTrainingModule(pipe, loss, extra)


def toy_dataset(folder: Path, n: int = 4, repeat: int = 1, size: int = 32, **kwargs: Any) -> Any:
    from diffsynth_core.data import UnifiedDataset
    from diffsynth_core.testing import make_image_dataset

    if not (folder / "metadata.csv").exists():
        make_image_dataset(folder, n, size)
    operator = UnifiedDataset.default_image_operator(folder, height=size, width=size)
    return UnifiedDataset(
        folder, folder / "metadata.csv", repeat=repeat, main_data_operator=operator, **kwargs
    )


def lora_weights(module: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def train(
    module: Any,
    dataset: Any,
    output: Path,
    learning_rate: float = 1e-3,
    num_epochs: int = 1,
    **options: Any,
) -> Any:
    """launch_training_task on one CPU process, without the progress bar."""
    from accelerate import Accelerator

    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.runner import launch_training_task

    logger = ModelLogger(output, remove_prefix_in_ckpt="pipe.dit.", save_every_epoch=False)
    options.setdefault("progress", False)
    return launch_training_task(
        # accelerate counts the accumulation: the Accelerator is built with it, as in the seed
        Accelerator(cpu=True, gradient_accumulation_steps=options.get("gradient_accumulation_steps", 1)),
        dataset, module, logger, learning_rate, num_epochs=num_epochs, **options
    )


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    from diffsynth_core.testing import make_image_dataset

    return make_image_dataset(tmp_path / "data", 4, 32)


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Any:
    """accelerate keeps process-wide singletons; each test starts from a clean slate."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def fixed_loss(pipe: Any, **inputs: Any) -> torch.Tensor:
    """The flow-matching MSE at a fixed timestep with noise fixed per image position: no RNG,
    so different batchings of the same samples must give the same gradient."""
    x0 = inputs["input_latents"]
    noise = torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(7)).expand_as(x0)
    t = torch.full((x0.shape[0],), 500.0)
    pred = pipe.model_fn(
        latents=pipe.scheduler.add_noise(x0, noise, t), timestep=t, text_emb=inputs["text_emb"]
    )
    return (pred - (noise - x0)).pow(2).flatten(1).mean(1).mean()
