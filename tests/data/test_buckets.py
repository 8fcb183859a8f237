"""Aspect-ratio buckets: one size per batch, a deterministic order, exact resume."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from diffsynth_core.data import BucketBatchSampler, UnifiedDataset, collate_samples
from diffsynth_core.errors import ConfigError

from .media import solid, write_csv

SIZES = [(64, 32)] * 7 + [(32, 64)] * 5 + [(48, 48)] * 4 + [None, None]


def sampler(**options: object) -> BucketBatchSampler:
    return BucketBatchSampler(SIZES, batch_size=3, **options)  # type: ignore[arg-type]


def test_every_batch_holds_one_size_and_every_index_once() -> None:
    batches = list(sampler())
    assert all(len({SIZES[i] for i in batch}) == 1 for batch in batches)
    assert sorted(i for batch in batches for i in batch) == list(range(len(SIZES)))
    assert max(len(b) for b in batches) == 3
    # 7 -> 3+3+1, 5 -> 3+2, 4 -> 3+1, and each unreadable row alone
    assert sorted(len(b) for b in batches) == [1, 1, 1, 1, 2, 3, 3, 3, 3]
    assert len(sampler()) == 9


def test_drop_last_drops_incomplete_batches() -> None:
    s = sampler(drop_last=True)
    assert [len(b) for b in s] == [3] * 4 and len(s) == 4


def test_order_is_deterministic_per_seed_and_epoch() -> None:
    a, b = sampler(seed=1), sampler(seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(sampler(seed=2)) != list(sampler(seed=1))


def test_no_shuffle_keeps_dataset_order_within_buckets() -> None:
    assert list(sampler(shuffle=False))[:3] == [[0, 1, 2], [3, 4, 5], [6]]


def test_resume_sees_the_tail_of_the_unbroken_order() -> None:
    full = sampler(seed=7)
    full.set_epoch(3)
    order = list(full)
    resumed = sampler(seed=7)
    resumed.load_state_dict({"seed": 7, "epoch": 3, "start_batch": 4})
    assert list(resumed) == order[4:] and len(resumed) == len(order) - 4
    resumed.set_epoch(4)  # the next epoch starts from its first batch again
    assert len(list(resumed)) == len(order)


def test_bad_batch_size() -> None:
    with pytest.raises(ConfigError):
        BucketBatchSampler(SIZES, batch_size=0)


def test_bucketed_loader_over_a_dataset_with_repeat(tmp_path: Path) -> None:
    shapes = [(64, 32), (32, 64), (64, 32), (32, 64), (64, 32)]
    for i, shape in enumerate(shapes):
        solid(tmp_path / f"{i}.png", shape)
    write_csv(tmp_path / "m.csv", "prompt,image", *(f"p{i},{i}.png" for i in range(5)))
    dataset = UnifiedDataset(tmp_path, tmp_path / "m.csv", repeat=2)
    batch_sampler = BucketBatchSampler.from_dataset(dataset, batch_size=2, seed=0)
    loader = DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=partial(collate_samples, unwrap_single=False),
    )
    seen: Counter[str] = Counter()
    for batch in loader:
        assert len({image.size for image in batch["image"]}) == 1
        seen.update(batch["prompt"])
    assert seen == Counter({f"p{i}": 2 for i in range(5)})
    assert len(loader) == 5  # 6 wide -> 3 batches, 4 tall -> 2
