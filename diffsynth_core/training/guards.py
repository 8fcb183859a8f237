"""What keeps work from being lost when a run must stop, and bad batches from stopping it.

* :class:`StateKeeper` saves the last good training state before the run stops: on a NaN/inf
  loss or gradient norm (the weights are still those of the last finite step), and on a bad
  sample under ``--on-bad-sample error``.
* :class:`BadBatches` counts and logs skipped samples (``bad_samples.jsonl``) and replaces a
  batch in which every sample was bad by the last good one at loss weight 0, so every process
  still runs its forward and backward in step with the others.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import DatasetError, NonFiniteLossError, TrainingError
from .state import TrainingPosition, TrainingStates


class StateKeeper:
    """Saves the training state at most once per step, and before the run stops on an error."""

    def __init__(
        self, states: TrainingStates, accelerator: Any, model: Any, optimizer: Any
    ) -> None:
        self.states, self.accelerator = states, accelerator
        self.model, self.optimizer = model, optimizer

    def save(self, position: TrainingPosition, rng: dict[str, Any] | None = None) -> Path:
        """``state/step-N`` for ``position`` (collective); written only if not written yet.
        ``rng``: the RNG states to save (captured at the end of that step), default the
        current ones."""
        if self.states.saved_step == position.step:
            return self.states.path_for(position.step)
        return self.states.save(self.accelerator, self.model, self.optimizer, position, rng=rng)

    def check_finite(
        self, value: Any, what: str, position: TrainingPosition, rng: dict[str, Any] | None = None
    ) -> None:
        """On NaN/inf: save the state of ``position`` (still good; ``rng`` its RNG states),
        then stop with the reason."""
        if value is None or math.isfinite(float(value)):
            return
        if what == "gradient norm" and self.accelerator.scaler is not None:
            return  # fp16: overflowing gradients are the grad scaler's business (it skips the step)
        kept = (
            f"the last good state is in {self.save(position, rng)}"
            if position.step
            else "no step was completed"
        )
        raise NonFiniteLossError(
            f"the {what} became {float(value)} after step {position.step} (epoch {position.epoch}); "
            f"training stopped and {kept}. Lower --learning-rate, set --max-grad-norm or check the "
            "data, then --resume latest."
        )

    @contextmanager
    def saved_on(
        self, error: type[BaseException], position: Callable[[], TrainingPosition]
    ) -> Iterator[None]:
        """Save the state of ``position()`` before ``error`` ends the run (single process only:
        the other processes of a data-parallel run would not join the save)."""
        try:
            yield
        except error:
            if self.accelerator.num_processes == 1 and position().step > 0:
                self.save(position())
            raise


@contextmanager
def disk_full_is_an_error(output: Path) -> Iterator[None]:
    """A full disk while writing into ``output`` ends the run with one line: what survived,
    and how to go on.

    Every checkpoint and state is written under a temporary name and renamed when complete, so
    the ones written before are intact; the half-written one is removed to free its space.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        from .logger import read_manifest

        states = TrainingStates(output / "state", {}).all()
        checkpoints = read_manifest(output)
        state = f"newest training state {states[-1]}" if states else "no training state yet"
        newest = output / checkpoints[-1]["file"] if checkpoints else "none"
        raise TrainingError(
            f"disk full while writing {exc.filename or 'into ' + str(output)}: the files written "
            f"before survive ({state}; newest checkpoint {newest}). Free some space, then "
            "--resume latest continues from that state."
        ) from exc


class BadBatches:
    """Skipped samples of one process: counted, logged, and never a reason to fall out of step."""

    def __init__(self, output: Path, process_index: int, dataset: Any) -> None:
        from ..data import BadSampleLog

        name = (
            "bad_samples.jsonl" if process_index == 0 else f"bad_samples.rank{process_index}.jsonl"
        )
        self.log = BadSampleLog(output / name)
        self.dataset = dataset
        self.last_good: Any = None

    def usable(self, batch: dict[str, Any], position: TrainingPosition) -> tuple[Any, float]:
        """(data, loss weight) for a collated batch; records its bad samples."""
        from ..data import split_bad

        data, records = split_bad(batch)
        self.log.add(records, step=position.step, epoch=position.epoch)
        if data is not None:
            self.last_good = data
            return data, 1.0
        if self.last_good is None:
            self.last_good = self._first_good()
        return self.last_good, 0.0

    def _first_good(self) -> Any:
        from ..data import collate_samples

        for index in range(len(self.dataset)):
            sample = self.dataset[index]
            if sample is not None:
                return {k: v for k, v in collate_samples([sample]).items() if k != "__bad__"}
        raise DatasetError(
            "every sample of the dataset is bad; see bad_samples.jsonl and fix the data"
        )

    def total(self, accelerator: Any) -> int:
        """Skipped samples over all processes (collective)."""
        if accelerator.num_processes == 1:
            return self.log.count
        count = torch.tensor([float(self.log.count)], device=accelerator.device)
        return int(accelerator.reduce(count, reduction="sum").item())
