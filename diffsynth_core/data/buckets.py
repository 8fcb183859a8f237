"""Aspect-ratio buckets: batches above size 1 in which every sample has the same size.

Rows are grouped by their size after the resize rule (known from image headers, without
decoding); each epoch every group is shuffled and cut into batches, and the batches are
shuffled together. The order depends only on (seed, epoch), so a resumed run can skip the
batches it already trained on (``start_batch``) and then see exactly what an unbroken run sees.

    sampler = BucketBatchSampler.from_dataset(dataset, batch_size=4, seed=42)
    loader = DataLoader(dataset, batch_sampler=sampler,
                        collate_fn=partial(collate_samples, unwrap_single=False))
    for epoch in range(start_epoch, num_epochs):
        sampler.set_epoch(epoch, start_batch=resume_batch if epoch == start_epoch else 0)
        for batch in loader: ...
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import Sampler

from ..errors import ConfigError

if TYPE_CHECKING:
    from .dataset import UnifiedDataset

Size = tuple[int, int]


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; all indices of a batch share one target size.

    ``sizes[i]`` is sample i's (width, height) after resizing; None (header unreadable) puts the
    sample in a bucket of its own, so it still surfaces as a counted bad sample when loaded.
    """

    def __init__(
        self,
        sizes: Sequence[Size | None],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
        self.sizes, self.batch_size = list(sizes), batch_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start_batch = 0, 0
        self._buckets = self._group()

    @classmethod
    def from_dataset(
        cls, dataset: UnifiedDataset, batch_size: int, **options: Any
    ) -> BucketBatchSampler:
        """A sampler over ``dataset`` using its header-derived ``target_sizes()``."""
        return cls(dataset.target_sizes(), batch_size, **options)

    def _group(self) -> list[list[int]]:
        """Indices grouped by size, groups in order of first appearance (a stable base order)."""
        groups: dict[Hashable, list[int]] = {}
        for index, size in enumerate(self.sizes):
            key: Hashable = tuple(size) if size is not None else ("unreadable", index)
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; skip its first ``start_batch`` batches (for resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of ``epoch`` (default: the current one) in order, nothing skipped."""
        # A str seed is hashed with sha512, so the order is the same in every process and run.
        rng = random.Random(f"{self.seed}:{self.epoch if epoch is None else epoch}")
        batches: list[list[int]] = []
        for bucket in self._buckets:
            indices = list(bucket)
            if self.shuffle:
                rng.shuffle(indices)
            batches.extend(self._cut(indices))
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _cut(self, indices: list[int]) -> list[list[int]]:
        cut = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and cut and len(cut[-1]) < self.batch_size:
            cut.pop()
        return cut

    def num_batches(self) -> int:
        """Batches in a whole epoch (the same every epoch)."""
        full = [len(b) // self.batch_size for b in self._buckets]
        partial = [
            0 if self.drop_last or len(b) % self.batch_size == 0 else 1 for b in self._buckets
        ]
        return sum(full) + sum(partial)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch :]

    def __len__(self) -> int:
        """Batches this iteration yields: the epoch's batches after ``start_batch``."""
        return max(0, self.num_batches() - self.start_batch)

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint needs to resume the data order (the runner sets start_batch)."""
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = state["seed"]
        self.set_epoch(state["epoch"], state.get("start_batch", 0))
