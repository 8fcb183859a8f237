"""A seed-style run of the toy family under ``--distributed MODE``, for test_fsdp.py.

    accelerate launch --num_processes 2 tests/distributed/sharded_train.py fsdp TINY DATA OUT [full]
    python tests/distributed/sharded_train.py fsdp TINY DATA OUT [full]   # one process

Besides training, the main process writes OUT/losses.json (each step's loss at full precision)
and OUT/sharding.json (the FSDP units and how the trainable weights were split). Its loss
draws no random number (fixed noise and timestep), so one process with 2 accumulated
batches and two processes with one batch each must train the same weights. ``full`` trains
the whole DiT instead of a LoRA on it, with SGD: the key projections' biases have no true
gradient (softmax ignores a shift shared by all keys), and AdamW would turn the float noise
that stands in for it into steps of the learning rate's size, different for every summation
order.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from diffsynth_core.pipeline import load_pipeline
from diffsynth_core.testing import use_toy_plugin
from diffsynth_core.training.distributed import make_accelerator
from diffsynth_core.training.logger import ModelLogger
from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
from diffsynth_core.training.runner import launch_training_task, seed_run


def fixed_loss(pipe: Any, **inputs: Any) -> torch.Tensor:
    """Flow-matching MSE at timestep 500 with noise fixed per latent position: no RNG."""
    x0 = inputs["input_latents"]
    noise = torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(7)).expand_as(x0)
    t = torch.full((x0.shape[0],), 500.0)
    pred = pipe.model_fn(
        latents=pipe.scheduler.add_noise(x0, noise, t), timestep=t, text_emb=inputs["text_emb"]
    )
    return (pred - (noise - x0)).pow(2).flatten(1).mean(1).mean()


def record_losses(output: Path) -> list[float]:
    """Every logged step loss, unrounded (metrics.csv keeps 6 digits)."""
    from diffsynth_core.training import metrics

    losses: list[float] = []
    log = metrics.MetricsLog.log

    def recorded(self: Any, step: int, epoch: int, loss: float, *rest: Any) -> None:
        losses.append(loss)
        log(self, step, epoch, loss, *rest)

    metrics.MetricsLog.log = recorded  # type: ignore[method-assign]
    return losses


def sharding(module: torch.nn.Module) -> dict[str, Any]:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    trainable = [p for p in module.parameters() if p.requires_grad]
    return {
        "units": sorted({type(m).__name__ for m in module.modules() if isinstance(m, FSDPModule)}),
        "dtensors": sum(isinstance(p, DTensor) for p in trainable),
        "trainable": len(trainable),
        "local_numel": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in trainable),
        "numel": sum(p.numel() for p in trainable),
    }


def main(mode: str, tiny: str, data: str, output: str, full: bool) -> None:
    from diffsynth_core.data import UnifiedDataset

    torch.set_num_threads(1)
    use_toy_plugin()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = make_accelerator(mode, "no", gradient_accumulation_steps=3 - world)
    seed_run(accelerator, 3)  # seed + rank, as diffsynth train: the LoRA init differs per rank
    pipe = load_pipeline("toy", model_path=tiny, device=str(accelerator.device))
    if full:
        switch_pipe_to_training_mode(pipe, trainable_models="dit")
    else:
        switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules="to_q,to_k,to_v,to_out", lora_rank=4)  # fmt: skip
    module = PipelineTrainingModule(pipe, fixed_loss)
    operator = UnifiedDataset.default_image_operator(data, height=32, width=32)
    dataset = UnifiedDataset(data, f"{data}/metadata.csv", repeat=2, main_data_operator=operator)
    logger = ModelLogger(output, remove_prefix_in_ckpt="pipe.dit.", save_every_epoch=False)
    losses = record_losses(Path(output))
    launch_training_task(
        accelerator, dataset, module, logger, learning_rate=1e-2, num_epochs=2, progress=False,
        seed=3, seeded=True, max_grad_norm=0.5, optimizer="SGD" if full else "AdamW",
    )  # fmt: skip
    if accelerator.is_main_process:
        (Path(output) / "losses.json").write_text(json.dumps(losses))
        (Path(output) / "sharding.json").write_text(json.dumps(sharding(module)))


if __name__ == "__main__":
    main(*sys.argv[1:5], full=sys.argv[5:] == ["full"])
