"""The NaN/inf guard of every optimizer step, without the host waiting on the GPU each step.

The promise (:class:`.guards.StateKeeper`): a step whose loss or gradient norm is NaN or inf
stops the run, the state of the step before it is saved, and no file ever holds a bad step.
Keeping it by reading the loss on the host after each step costs a host-device
synchronisation per step: the CPU waits for the GPU to drain its queue before it may queue
the next step, and the GPU idles while the next step's kernels are launched.

When the optimizer can skip an update on the device -- torch's fused Adam and AdamW read a
``found_inf`` tensor, the mechanism AMP's grad scaler uses -- the check is made there:

* each optimizer step ORs "this step's loss or gradient norm is not finite" into a flag kept
  on the device. Once set, the flag stays set: the optimizer skips every later update
  (weights, moments and step count untouched) and so does the EMA
  (:meth:`.ema.EmaWeights.update`). The weights stay those of the last good step;
* the host reads the window's losses and gradient norms in one transfer every ``--log-every``
  steps, and before anything is saved, sampled or validated (:meth:`StepChecks.settle`). The
  window's rows are written then, one per step as before. If a step was bad, the state of the
  step before it is saved -- its position and the RNG states captured at its end, so a resumed
  run continues as the unbroken run would have -- and the run stops with the same error.

Other optimizers, fp16 (its grad scaler owns ``found_inf``) and sharded runs (FSDP, DeepSpeed)
are checked on the host every step, before the optimizer step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from .guards import StateKeeper
from .metrics import MetricsLog
from .state import TrainingPosition, capture_rng

DEFAULT_EVERY = 10  # steps between host reads when the check runs on the device


def skips_on_device(optimizer: Any, accelerator: Any) -> bool:
    """Whether ``optimizer`` (prepared) can skip a bad update on the device itself: torch's
    Adam/AdamW built with ``fused=True``, no fp16 grad scaler, no sharding."""
    inner = getattr(optimizer, "optimizer", optimizer)
    sharded = str(accelerator.distributed_type).rsplit(".", 1)[-1] in ("FSDP", "DEEPSPEED")
    return (
        isinstance(inner, (torch.optim.Adam, torch.optim.AdamW))
        and all(group.get("fused") for group in inner.param_groups)
        and accelerator.scaler is None
        and not sharded
    )


@dataclass
class _Step:
    """One optimizer step whose loss the host has not read yet."""

    position: TrainingPosition
    epoch: int
    lr: float
    loss: Any  # a 0-dim tensor (device mode) or a float (host mode)
    grad_norm: Any
    samples: int
    ended: float  # time.perf_counter() at its end (the log's speed column)
    rng: dict[str, Any]  # the RNG states at its end: the state saved if the next step is bad


class StepChecks:
    """Checks every step's loss and gradient norm and writes its row to the metrics log.

    The runner calls :meth:`loss` for each micro-batch, :meth:`gradient_norm` before the
    optimizer step, :meth:`step_done` after it, and :meth:`settle` before it saves, samples,
    validates or ends. ``every`` is ``--log-every`` (None: :data:`DEFAULT_EVERY` when the check
    runs on the device, else 1).
    """

    def __init__(
        self,
        keeper: StateKeeper,
        log: MetricsLog,
        accelerator: Any,
        optimizer: Any,
        every: int | None,
        start: TrainingPosition,
    ) -> None:
        self.keeper, self.log = keeper, log
        self.on_device = skips_on_device(optimizer, accelerator)
        self.every = (every or DEFAULT_EVERY) if self.on_device else 1
        self.inner = getattr(optimizer, "optimizer", optimizer)
        # set once a step was bad: every later update is skipped (read by the fused kernels)
        self.flag: torch.Tensor | None = None
        if self.on_device:
            self.flag = torch.zeros((), device=accelerator.device, dtype=torch.float32)
            self.inner.found_inf = self.flag
        self.micro: list[Any] = []  # this step's micro-batch losses
        self.window: list[_Step] = []
        self.good = _Step(start, start.epoch, 0.0, None, None, 0, time.perf_counter(), capture_rng())
        self.last_loss: float | None = None

    # -- inside the step ------------------------------------------------------------------

    def loss(self, reduced: torch.Tensor) -> None:
        """One micro-batch's loss (mean over processes); on the host: checked now."""
        if self.on_device:
            self.micro.append(reduced.detach().float())
            return
        self.micro.append(float(reduced))
        self._check_now(self.micro[-1], "loss")

    def gradient_norm(self, grad_norm: Any) -> None:
        """Before the optimizer step; on the device: a bad loss or norm sets the flag."""
        if not self.on_device:
            self._check_now(grad_norm, "gradient norm")
            return
        assert self.flag is not None
        losses = torch.stack(self.micro).sum()
        norm = torch.as_tensor(grad_norm, device=self.flag.device, dtype=torch.float32)
        bad = torch.logical_not(torch.isfinite(losses) & torch.isfinite(norm))
        torch.maximum(self.flag, bad.float(), out=self.flag)  # in place: the kernels hold it

    @property
    def skip(self) -> torch.Tensor | None:
        """1 on the device once a step was bad (the EMA skips its update), or None."""
        return self.flag

    def step_done(
        self, position: TrainingPosition, epoch: int, lr: float, grad_norm: Any, samples: int
    ) -> None:
        """The optimizer step ended at ``position``; its row waits for the next :meth:`settle`,
        which comes now when ``every`` steps have passed."""
        if self.on_device:
            loss: Any = torch.stack(self.micro).mean()
        else:  # read already: floats (a sharded run's norm is a DTensor, which float() gathers)
            loss = sum(self.micro) / len(self.micro)
            grad_norm = None if grad_norm is None else float(grad_norm)
        self.micro = []
        step = _Step(position, epoch, lr, loss, grad_norm, samples, time.perf_counter(), capture_rng())
        self.window.append(step)
        if position.step % self.every == 0:
            self.settle()

    def due(self, step: int) -> bool:
        """Whether the host read the losses at ``step`` (the same answer on every process)."""
        return step % self.every == 0

    # -- on the host ----------------------------------------------------------------------

    def settle(self) -> None:
        """Read the waiting steps' losses (one transfer), write their rows; if one was bad,
        save the state of the step before it and stop (NonFiniteLossError)."""
        if not self.window:
            return
        window, self.window = self.window, []
        losses, norms = _to_host(window)
        for step, loss, norm in zip(window, losses, norms, strict=True):
            if not math.isfinite(loss):
                self._stop(loss, "loss")
            if norm is not None and not math.isfinite(norm):
                self._stop(norm, "gradient norm")
            self.log.log(step.position.step, step.epoch, loss, step.lr, norm, step.samples, step.ended)
            self.good, self.last_loss = step, loss

    def _check_now(self, value: Any, what: str) -> None:
        if value is not None and not math.isfinite(float(value)):
            self.settle()  # the rows of the good steps before it
            self._stop(value, what)

    def _stop(self, value: Any, what: str) -> None:
        self.keeper.check_finite(value, what, self.good.position, rng=self.good.rng)


def _to_host(window: list[_Step]) -> tuple[list[float], list[float | None]]:
    """The window's losses and gradient norms as floats: one device-to-host copy."""
    norms_given = [s.grad_norm is not None for s in window]
    values = [s.loss for s in window] + [s.grad_norm for s in window if s.grad_norm is not None]
    if all(isinstance(v, (int, float)) for v in values):
        read = [float(v) for v in values]
    else:
        device = next(v.device for v in values if isinstance(v, torch.Tensor))
        read = torch.stack(
            [torch.as_tensor(v, device=device, dtype=torch.float32).reshape(()) for v in values]
        ).tolist()
    losses, rest = read[: len(window)], iter(read[len(window) :])
    return losses, [next(rest) if given else None for given in norms_given]
