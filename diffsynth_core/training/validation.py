"""Validation loss (``--validation-dataset`` / ``--validation-split``, ``--validation-every``).

Every validation sample is scored at the same timesteps (:data:`TIMESTEP_FRACTIONS` of the
training schedule, pinned through the training module's timestep boundaries) with the same
noise (the RNG seeded per sample and timestep), in eval mode (no dropout) and without
gradients. The same weights therefore always give the same number, and a falling curve means
better weights, not luckier noise. The run's RNG states are untouched (``fork_rng`` plus the
python / numpy states), so a run with validation trains exactly as one without.

With ``--ema-decay`` the EMA weights are scored too (``val_loss_ema``). Every process scores
its share of the samples; the mean is over all of them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import ConfigError
from .sampling import preserved_state

# fractions of the training schedule every validation sample is scored at
TIMESTEP_FRACTIONS = (0.125, 0.375, 0.625, 0.875)
_SEED = 20_240_601  # the validation noise: the same in every run and every evaluation


def split_dataset(dataset: Any, fraction: float) -> tuple[Any, Any]:
    """``(training, validation)``: the last ``fraction`` of the dataset's rows (at least one)
    held out, not repeated; the training part keeps the rest (and its ``repeat``)."""
    rows = getattr(dataset, "rows", None)
    if rows is None:
        raise ConfigError("--validation-split needs a dataset with rows (a UnifiedDataset)")
    held = max(1, round(len(rows) * fraction))
    if held >= len(rows):
        raise ConfigError(
            f"--validation-split {fraction} holds out all {len(rows)} row(s) of the dataset: "
            "lower it, or give a separate --validation-dataset"
        )
    training, validation = copy.copy(dataset), copy.copy(dataset)
    training.rows, validation.rows = rows[:-held], rows[-held:]
    validation.repeat, validation.max_data_items = 1, None
    validation.bad_records = []
    return training, validation


class Validation:
    """Scores a validation dataset every ``every`` steps (see the module docstring)."""

    def __init__(self, dataset: Any, every: int) -> None:
        if len(dataset) == 0:
            raise ConfigError("the validation dataset has no samples")
        self.dataset = dataset
        self.every = every
        self.last_step: int | None = None

    @classmethod
    def from_options(cls, opts: Any, total_steps: int) -> Validation | None:
        """From RunOptions (``validation_data``, ``validation_every``, ``sample_every``)."""
        if opts.validation_data is None:
            return None
        every = opts.validation_every or opts.sample_every or max(1, total_steps // 10)
        return cls(opts.validation_data, every)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def evaluate(
        self, accelerator: Any, model: torch.nn.Module, step: int, log: Any, ema: Any = None
    ) -> None:
        """Score the weights (and the EMA's) at ``step`` and log them, once per step; the
        time is left out of the progress bar's rate (collective)."""
        if self.last_step == step:
            return
        with log.paused(f"validation loss at step {step}"):
            raw = self.loss(accelerator, model)
            averaged = None
            if ema is not None:
                with ema.swapped_in():
                    averaged = self.loss(accelerator, model)
        log.log_validation(step, raw, averaged, due=self.due)
        self.last_step = step

    def loss(self, accelerator: Any, model: torch.nn.Module) -> float:
        """The mean loss over every validation sample and timestep (collective)."""
        module = accelerator.unwrap_model(model)
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        with preserved_state(module), torch.no_grad(), accelerator.autocast():
            for index in range(accelerator.process_index, len(self.dataset), accelerator.num_processes):
                data = self._sample(index)
                if data is None:  # a bad sample (counted by the dataset): left out
                    continue
                for j, fraction in enumerate(TIMESTEP_FRACTIONS):
                    torch.manual_seed(_SEED + index * len(TIMESTEP_FRACTIONS) + j)
                    with _pinned_timestep(module, fraction):
                        total[0] += float(module(data))
                    total[1] += 1
        total = accelerator.reduce(total, reduction="sum")
        if float(total[1]) == 0:
            raise ConfigError("every sample of the validation dataset is bad; fix the data")
        return float(total[0] / total[1])

    def _sample(self, index: int) -> dict[str, Any] | None:
        from ..data import collate_samples

        sample = self.dataset[index]
        if sample is None:
            return None
        return {k: v for k, v in collate_samples([sample]).items() if k != "__bad__"}


@contextmanager
def _pinned_timestep(module: Any, fraction: float) -> Iterator[None]:
    """The loss draws its timestep at ``fraction`` of the schedule: both boundaries there
    (a module without ``extra_inputs`` keeps its own timesteps, fixed by the seed alone)."""
    extra = getattr(module, "extra_inputs", None)
    if not isinstance(extra, dict):
        yield
        return
    kept = dict(extra)
    extra.update(min_timestep_boundary=fraction, max_timestep_boundary=fraction,
                 timestep_sampling="uniform")  # fmt: skip
    try:
        yield
    finally:
        extra.clear()
        extra.update(kept)
