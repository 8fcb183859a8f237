"""validate(): the start-up pass behind --check-data (headers; decoding: test_check_decodes.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from diffsynth_core.data import UnifiedDataset, validate
from diffsynth_core.data import images as images_module
from diffsynth_core.data.operators import LoadImageList

from .media import huge_png_header, solid, write_csv


@pytest.fixture
def dataset(tmp_path: Path) -> UnifiedDataset:
    base = tmp_path / "data"
    solid(base / "ok.png", (64, 64))
    solid(base / "tiny.png", (8, 8))
    (base / "zero.png").write_bytes(b"")
    (base / "junk.png").write_bytes(b"junk")
    huge_png_header(base / "bomb.png", 30_000, 30_000)
    os.symlink(solid(tmp_path / "secret.png"), base / "link.png")
    names = [
        "ok.png",
        "missing.png",
        "tiny.png",
        "zero.png",
        "junk.png",
        "bomb.png",
        "link.png",
        "ok.png",
    ]
    write_csv(base / "m.csv", "prompt,image", *(f"p,{n}" for n in names))
    return UnifiedDataset(base, base / "m.csv")


def test_validate_sorts_rows_into_ok_and_refused(dataset: UnifiedDataset) -> None:
    report = validate(dataset)
    assert report.ok_rows == [0, 7] and not report.ok
    assert [(r["row"], r["kind"]) for r in report.refused] == [
        (1, "missing"),
        (2, "too small"),
        (3, "empty file"),
        (4, "corrupt"),
        (5, "too large"),
        (6, "outside dataset"),
    ]
    text = report.format()
    assert text.startswith("Checked 8 row(s) of ") and "2 ok, 6 refused." in text
    assert "row 1, column 'image' (missing.png): missing: file does not exist" in text
    assert report.format(limit=2).endswith("... and 4 more")


def test_validate_without_decode_never_decodes(
    dataset: UnifiedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate decoded an image")

    monkeypatch.setattr(images_module, "read_image", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    assert validate(dataset, decode=False).ok_rows == [0, 7]


def test_validate_checks_image_lists_and_all_file_columns(tmp_path: Path) -> None:
    solid(tmp_path / "a.png")
    rows = [
        {"prompt": "x", "image": "a.png", "refs": "a.png,gone.png"},
        {"prompt": "y", "image": "a.png", "refs": ["a.png"]},
        {"prompt": "z", "image": "a.png"},
    ]
    (tmp_path / "m.json").write_text(json.dumps(rows), encoding="utf-8")
    load = UnifiedDataset.default_image_operator(tmp_path)
    ds = UnifiedDataset(
        tmp_path, tmp_path / "m.json", special_operator_map={"refs": LoadImageList(load)}
    )
    report = validate(ds)
    assert report.ok_rows == [1, 2]
    assert report.refused[0]["column"] == "refs" and report.refused[0]["kind"] == "missing"


def test_validate_without_decode_checks_videos_by_existence(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"pretend video")
    (tmp_path / "frames").mkdir()
    (tmp_path / "empty_frames").mkdir()
    solid(tmp_path / "frames" / "0.png")
    write_csv(
        tmp_path / "m.csv", "prompt,video", "p,a.mp4", "p,frames", "p,empty_frames", "p,gone.mp4"
    )
    ds = UnifiedDataset(
        tmp_path,
        tmp_path / "m.csv",
        data_file_keys="video",
        main_data_operator=UnifiedDataset.default_video_operator(tmp_path),
    )
    report = validate(ds, decode=False)
    assert report.ok_rows == [0, 1] and report.refused_rows == [2, 3]
