"""Which samples each process trains on, batch by batch: deterministic, sharded, resumable.

Every epoch's batches come from :class:`~diffsynth_core.data.BucketBatchSampler` (order from
``(seed, epoch)`` only; same-size samples per batch above batch size 1). Process ``r`` of ``n``
takes batches ``r, r + n, ...``; every process gets the same number of batches (data-parallel
processes must step together) and the count is cut to whole optimizer steps. A resumed run
asks for the same epoch from batch ``b`` on and sees exactly what the unbroken run saw.
"""

from __future__ import annotations

import os
import signal
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave the stop to the main process.

    Ctrl-C and a scheduler's ``kill`` reach the whole process group. A worker that died of the
    signal made the main process raise "DataLoader worker ... is killed by signal" instead of
    saving and stopping. So a worker moves to a process group of its own (a signal to the run's
    group no longer reaches it) and ignores SIGINT. SIGTERM keeps its default: the main process
    (and multiprocessing's exit handler, after an error) ends its workers with it, and a worker
    that ignored it would hang that exit forever. A worker whose parent died exits by itself
    (torch's worker loop watches its parent).
    """
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EpochBatches:
    """The batch plan of one run (see the module docstring)."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        gradient_accumulation_steps: int,
        seed: int,
        num_processes: int = 1,
        process_index: int = 0,
    ) -> None:
        from ..data import BucketBatchSampler

        self.dataset = dataset
        self.batch_size = batch_size
        self.accumulation = gradient_accumulation_steps
        self.seed = seed
        self.num_processes, self.process_index = num_processes, process_index
        self.sampler = BucketBatchSampler(self._sizes(dataset), batch_size, seed=seed, shuffle=True)
        self.batches_per_epoch = self._per_process(self.sampler.num_batches())
        self._samples_per_step: int | None = None
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the dataset has {len(dataset)} sample(s): too few for batch size {batch_size} x "  # type: ignore[arg-type]
                f"{gradient_accumulation_steps} accumulation step(s) x {num_processes} process(es). "
                "Lower those or raise --repeat."
            )

    @classmethod
    def for_run(cls, dataset: Dataset[Any], opts: Any, accelerator: Any) -> EpochBatches:
        """The plan of a run with RunOptions ``opts`` on this process of ``accelerator``."""
        return cls(
            dataset,
            opts.batch_size,
            opts.gradient_accumulation_steps,
            opts.seed,
            accelerator.num_processes,
            accelerator.process_index,
        )

    def _sizes(self, dataset: Any) -> list[Any]:
        # Sizes only matter for grouping batches above 1; reading headers is wasted otherwise.
        if self.batch_size > 1 and hasattr(dataset, "target_sizes"):
            return list(dataset.target_sizes())
        return [(0, 0)] * len(dataset)

    def _per_process(self, total_batches: int) -> int:
        per_process = total_batches // self.num_processes
        return per_process - per_process % self.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return self.batches_per_epoch // self.accumulation

    @property
    def nominal_samples_per_step(self) -> int:
        return self.batch_size * self.accumulation * self.num_processes

    @property
    def samples_per_step(self) -> int:
        """Samples one optimizer step really trains on (the mean over an epoch): a batch holds
        fewer than the batch size when its size bucket, or the dataset, is smaller."""
        if self.batch_size == 1:
            return self.nominal_samples_per_step
        if self._samples_per_step is None:
            used = self.sampler.batches(0)[: self.batches_per_epoch * self.num_processes]
            self._samples_per_step = round(sum(map(len, used)) / self.steps_per_epoch)
        return self._samples_per_step

    def epoch(self, epoch: int) -> list[list[int]]:
        """This process's batches (lists of dataset indices) of ``epoch``, in order."""
        everything = self.sampler.batches(epoch)
        return everything[self.process_index :: self.num_processes][: self.batches_per_epoch]

    def loader(self, epoch: int, start_batch: int = 0, num_workers: int = 0) -> DataLoader[Any]:
        """A DataLoader over ``epoch``'s batches from ``start_batch`` on."""
        from ..data import collate_samples

        # Its own generator: the DataLoader draws worker seeds from it, never from the global
        # RNG, whose state the resume test compares.
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if hasattr(self.dataset, "set_epoch"):  # per-epoch captions (data/captions.py)
            self.dataset.set_epoch(epoch)
        return DataLoader(
            self.dataset,
            batch_sampler=self.epoch(epoch)[start_batch:],
            collate_fn=partial(collate_samples, unwrap_single=self.batch_size == 1),
            num_workers=num_workers,
            generator=generator,
            worker_init_fn=ignore_stop_signals if num_workers else None,
        )

    def layout(self) -> dict[str, int]:
        """What a saved position means; resuming with another layout would replay other data."""
        return {
            "dataset_size": len(self.dataset),  # type: ignore[arg-type]
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.accumulation,
            "num_processes": self.num_processes,
            "seed": self.seed,
        }
