"""UnifiedDataset samples, the bad-sample policies, collation and the bad-sample log."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from diffsynth_core.data import BadSampleLog, UnifiedDataset, collate_samples, split_bad
from diffsynth_core.data.operators import LoadImageList
from diffsynth_core.errors import BadSampleError, ConfigError

from .media import solid, write_csv

BAD_ROWS = {1: "missing", 3: "corrupt", 4: "outside dataset"}


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """Six rows: 0, 2, 5 good; 1 missing, 3 corrupt, 4 escapes the folder."""
    base = tmp_path / "data"
    solid(base / "good0.png", (64, 32), (255, 0, 0))
    solid(base / "good2.png", (64, 32), (0, 255, 0))
    solid(base / "good5.png", (32, 32), (0, 0, 255))
    (base / "corrupt.png").write_bytes(b"\x89PNG not really")
    solid(tmp_path / "outside.png")
    write_csv(
        base / "metadata.csv",
        "prompt,image",
        "p0,good0.png",
        "p1,missing.png",
        "p2,good2.png",
        "p3,corrupt.png",
        "p4,../outside.png",
        "p5,good5.png",
    )
    return base


def make(base: Path, **options: object) -> UnifiedDataset:
    return UnifiedDataset(base, base / "metadata.csv", **options)  # type: ignore[arg-type]


def test_sample_holds_every_column_and_loaded_image(dataset_dir: Path) -> None:
    dataset = make(
        dataset_dir,
        main_data_operator=UnifiedDataset.default_image_operator(dataset_dir, height=16, width=16),
    )
    sample = dataset[0]
    assert sample["prompt"] == "p0"
    assert sample["image"].size == (16, 16) and sample["image"].getpixel((8, 8)) == (255, 0, 0)


def test_repeat(dataset_dir: Path) -> None:
    dataset = make(dataset_dir, repeat=3)
    assert len(dataset) == 18
    assert dataset[12]["prompt"] == "p0" and dataset.row_of(17) == 5
    with pytest.raises(IndexError):
        dataset[18]
    with pytest.raises(ConfigError, match="repeat"):
        make(dataset_dir, repeat=0)


def test_skip_policy_returns_none_and_records(dataset_dir: Path) -> None:
    dataset = make(dataset_dir)
    results = [dataset[i] for i in range(len(dataset))]
    assert [i for i, s in enumerate(results) if s is None] == sorted(BAD_ROWS)
    assert {r["row"]: r["kind"] for r in dataset.bad_records} == BAD_ROWS
    record = dataset.bad_records[0]
    assert record["path"] == "missing.png" and record["column"] == "image"
    assert record["reason"] == "file does not exist"


def test_error_policy_raises_with_row_and_path(dataset_dir: Path) -> None:
    dataset = make(dataset_dir, on_bad_sample="error")
    assert dataset[0]["prompt"] == "p0"
    with pytest.raises(
        BadSampleError, match=r"row 3, column 'image' \(corrupt\.png\): corrupt"
    ) as info:
        dataset[3]
    assert (info.value.row, info.value.path) == (3, "corrupt.png")
    with pytest.raises(ConfigError, match="on_bad_sample"):
        make(dataset_dir, on_bad_sample="ignore")


def test_any_operator_failure_gets_context(dataset_dir: Path) -> None:
    def broken(value: object) -> object:
        raise ValueError("boom")

    dataset = make(dataset_dir, main_data_operator=broken, on_bad_sample="error")
    with pytest.raises(
        BadSampleError, match=r"row 0, column 'image' \(good0\.png\): ValueError: boom"
    ):
        dataset[0]


def test_collate_single_sample_is_unwrapped(dataset_dir: Path) -> None:
    dataset = make(dataset_dir)
    batch = collate_samples(dataset.__getitems__([0]))
    assert (
        batch["image"].size == (64, 32) and batch["prompt"] == "p0"
    )  # the seed's data["image"].size
    assert batch["__bad__"] == []
    only_bad = collate_samples(dataset.__getitems__([1]))
    assert split_bad(only_bad) == (None, [only_bad["__bad__"][0]])


def test_collate_batch_of_lists_with_bad_records(dataset_dir: Path) -> None:
    dataset = make(dataset_dir)
    batch = collate_samples(dataset.__getitems__([0, 1, 2, 3]))
    assert batch["prompt"] == ["p0", "p2"]
    assert [im.getpixel((0, 0)) for im in batch["image"]] == [(255, 0, 0), (0, 255, 0)]
    assert [(r["row"], r["kind"]) for r in batch["__bad__"]] == [(1, "missing"), (3, "corrupt")]
    one_left = collate_samples(dataset.__getitems__([0, 1]), unwrap_single=False)
    assert one_left["prompt"] == ["p0"]  # batch size above 1 keeps the list shape


def test_dataloader_workers_skip_and_report(dataset_dir: Path, tmp_path: Path) -> None:
    dataset = make(dataset_dir, repeat=2)
    loader = DataLoader(
        dataset,
        batch_size=2,
        num_workers=2,
        collate_fn=partial(collate_samples, unwrap_single=False),
    )
    log = BadSampleLog(tmp_path / "run" / "bad_samples.jsonl")
    prompts = []
    for step, batch in enumerate(loader):
        data, bad = split_bad(batch)
        log.add(bad, step=step)
        prompts += data["prompt"] if data else []
    assert sorted(prompts) == sorted(["p0", "p2", "p5"] * 2)
    assert log.count == 6 and log.rows == set(BAD_ROWS)
    assert log.by_kind() == {"missing": 2, "corrupt": 2, "outside dataset": 2}
    lines = [
        json.loads(line)
        for line in (tmp_path / "run" / "bad_samples.jsonl").read_text().splitlines()
    ]
    assert sorted((r["row"], r["kind"]) for r in lines) == sorted(list(BAD_ROWS.items()) * 2)
    assert all("step" in r for r in lines)
    assert log.summary().startswith("6 bad sample(s) skipped from 3 row(s) (")


def test_dataloader_workers_error_policy_names_the_row(dataset_dir: Path) -> None:
    loader = DataLoader(
        make(dataset_dir, on_bad_sample="error"), num_workers=2, collate_fn=collate_samples
    )
    iterator = iter(loader)
    with pytest.raises(BadSampleError, match=r"row 1, column 'image' \(missing\.png\): missing"):
        list(iterator)
    # torch otherwise stops the workers only when the garbage collector finds the iterator
    # (its re-raised exception forms a reference cycle), which then waits 5 s per worker.
    iterator._shutdown_workers()  # type: ignore[attr-defined]


def test_bad_sample_log_without_file() -> None:
    log = BadSampleLog()
    assert log.summary() == "no bad samples"
    record = {"row": 2, "kind": "corrupt", "path": "x.png", "reason": "r", "column": "image"}
    assert log.add_batch({"__bad__": [record, record]}) == 2
    assert log.summary() == "2 bad sample(s) skipped from 1 row(s) (2 corrupt)"


def test_several_file_columns_and_special_operator(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (32, 32), (255, 0, 0))
    solid(tmp_path / "c.png", (32, 32), (0, 255, 0))
    solid(tmp_path / "r1.png", (16, 16), (0, 0, 255))
    rows = [
        {"prompt": "x", "image": "a.png", "control_image": "c.png", "refs": ["r1.png", "a.png"]},
        {"prompt": "y", "image": "a.png", "control_image": "c.png"},
    ]
    (tmp_path / "m.json").write_text(json.dumps(rows), encoding="utf-8")
    load = UnifiedDataset.default_image_operator(tmp_path)
    dataset = UnifiedDataset(
        tmp_path,
        tmp_path / "m.json",
        data_file_keys="image,control_image",
        special_operator_map={"refs": LoadImageList(load)},
    )
    first, second = dataset[0], dataset[1]
    assert first["control_image"].getpixel((0, 0)) == (0, 255, 0)
    assert [im.getpixel((0, 0)) for im in first["refs"]] == [(0, 0, 255), (255, 0, 0)]
    assert "refs" not in second  # optional special column: absent stays absent


def test_target_sizes_match_loaded_sizes(tmp_path: Path) -> None:
    sizes = [(640, 480), (480, 640), (300, 300), (1000, 100)]
    for i, size in enumerate(sizes):
        solid(tmp_path / f"{i}.png", size)
    write_csv(tmp_path / "m.csv", "prompt,image", *(f"p,{i}.png" for i in range(4)), "p,gone.png")
    op = UnifiedDataset.default_image_operator(tmp_path, max_pixels=256 * 256)
    dataset = UnifiedDataset(tmp_path, tmp_path / "m.csv", repeat=2, main_data_operator=op)
    predicted = dataset.target_sizes()
    assert len(predicted) == 10 and predicted[4] is None and predicted[5:] == predicted[:5]
    assert predicted[:4] == [dataset[i]["image"].size for i in range(4)]
