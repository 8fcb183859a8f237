"""Optimizers (AdamW, torchao's low-bit AdamW, or any class by dotted path) and the LR schedule.

``AdamW8bit``, ``AdamW4bit`` and ``AdamWFp8`` are torchao's (``torchao.optim``): the two
moments stored in 8 bits, 4 bits or fp8 with one scale per block of 256 (tensors under 4096
values stay in fp32), updates computed in fp32; they run on a CPU too. bitsandbytes' optimizers
work by their dotted path (``bitsandbytes.optim.AdamW8bit``) once it is installed.
``--optimizer-offload`` wraps the optimizer in torchao's ``CPUOffloadOptimizer`` (state and
step in CPU memory; CUDA only).

The schedule is a pure function of the optimizer step: ``lr(step)``. The runner sets each
param group's ``lr`` from it before every optimizer step, so resuming needs nothing but the
step number (saved with the training state), and no scheduler is stepped once per process
(accelerate's prepared schedulers step ``num_processes`` times per call).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZER_ALIASES = {
    "adamw": "torch.optim.AdamW",
    "adam": "torch.optim.Adam",
    "sgd": "torch.optim.SGD",
    "adamw8bit": "torchao.optim.AdamW8bit",
    "adamw4bit": "torchao.optim.AdamW4bit",
    "adamwfp8": "torchao.optim.AdamWFp8",
}


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """``AdamW`` (default), another alias, or a dotted path like ``bitsandbytes.optim.AdamW8bit``."""
    path = OPTIMIZER_ALIASES.get(name.lower(), name)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"--optimizer {name!r}: give AdamW, Adam, SGD or a dotted path (bitsandbytes.optim.AdamW8bit)"
        )
    if module_name.split(".")[0] == "torchao":
        from .quantize import quiet_torchao_logs

        quiet_torchao_logs()
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"--optimizer {name!r} cannot be imported ({exc}); is its package installed?"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"--optimizer {name!r} is not a torch.optim.Optimizer subclass")
    return cls


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str = "AdamW",
    learning_rate: float = 1e-4,
    weight_decay: float | None = None,
    offload: bool = False,
    sharded: bool = False,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer over ``params``; ``weight_decay`` None keeps the class's own default.

    ``offload`` keeps its state in CPU memory (torchao's CPUOffloadOptimizer; CUDA only);
    ``sharded``: the parameters are about to be sharded (FSDP, DeepSpeed)."""
    params = list(params)
    if not params:
        raise ConfigError(
            "nothing to train: no parameter requires grad. Give --lora-base-model and "
            "--lora-target-modules, or --trainable-models."
        )
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    # a subclass's constructor takes ``lr`` (torch's base class takes a defaults dict)
    make: Callable[..., torch.optim.Optimizer] = optimizer_class(name)
    if offload:
        return _offloaded(make, params, learning_rate, **kwargs)
    if _fusable(make, params, sharded) and "fused" not in kwargs:
        kwargs["fused"] = True  # one kernel for every tensor's update: no per-tensor launches
    return make(params, lr=learning_rate, **kwargs)


def _fusable(cls: Any, params: list[torch.nn.Parameter], sharded: bool = False) -> bool:
    """torch's Adam/AdamW over floating parameters all on CUDA or all on the CPU: their fused
    kernels apply (one kernel per step, and a bad step is skipped on the device:
    :mod:`.step_checks`). Sharded CPU runs (FSDP over gloo) keep the default implementation."""
    device = params[0].device.type
    return (
        cls in (torch.optim.Adam, torch.optim.AdamW)
        and (device == "cuda" or (device == "cpu" and not sharded))
        and all(p.device.type == device and p.is_floating_point() for p in params)
    )


def _offloaded(
    make: Callable[..., torch.optim.Optimizer],
    params: list[torch.nn.Parameter],
    learning_rate: float,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    if params[0].device.type not in ("cuda", "xpu"):
        raise ConfigError(
            "--optimizer-offload moves the optimizer state off a CUDA GPU (torchao's "
            f"CPUOffloadOptimizer); the weights are on {params[0].device.type}, where it "
            "already lives: leave the option out"
        )
    from .quantize import quiet_torchao_logs

    quiet_torchao_logs()
    from torchao.optim import CPUOffloadOptimizer

    offloaded: torch.optim.Optimizer = CPUOffloadOptimizer(
        params, optimizer_class=make, lr=learning_rate, **kwargs
    )
    return offloaded


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up from 0 over ``warmup_steps``, then constant, linear or cosine decay to 0."""

    name: str
    base_lr: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ConfigError(
                f"--lr-scheduler {self.name!r} is unknown; use one of {', '.join(SCHEDULES)}"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps must be >= 0, not {self.warmup_steps}")

    def factor(self, step: int) -> float:
        """The multiplier of ``base_lr`` for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.name == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every param group's lr for ``step``; returns it."""
        lr = self(step)
        for group in optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # torchao's optimizers: a tensor, in place
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        return lr
