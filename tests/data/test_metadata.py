"""Metadata formats and the dataset-level errors (encoding, columns, emptiness)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from diffsynth_core.data import UnifiedDataset
from diffsynth_core.data.files import is_empty_value
from diffsynth_core.errors import DatasetError

from .media import solid, write_csv


@pytest.fixture
def images(tmp_path: Path) -> Path:
    solid(tmp_path / "a.png", (32, 32), (255, 0, 0))
    solid(tmp_path / "b.png", (48, 32), (0, 0, 255))
    return tmp_path


def prompts_and_sizes(dataset: UnifiedDataset) -> list[tuple[str, tuple[int, int]]]:
    return [(dataset[i]["prompt"], dataset[i]["image"].size) for i in range(len(dataset))]


EXPECTED = [("a red square", (32, 32)), ("a blue one", (48, 32))]


def test_csv(images: Path) -> None:
    write_csv(images / "m.csv", "image,prompt", "a.png,a red square", 'b.png,"a blue one"')
    assert prompts_and_sizes(UnifiedDataset(images, images / "m.csv")) == EXPECTED


def test_csv_with_excel_bom_and_empty_caption(images: Path) -> None:
    (images / "m.csv").write_bytes("\ufeffprompt,image\n,a.png\nNone,b.png\n".encode())
    dataset = UnifiedDataset(images, images / "m.csv")
    assert [dataset[0]["prompt"], dataset[1]["prompt"]] == ["", "None"]


def test_json_and_jsonl(images: Path) -> None:
    rows = [
        {"image": "a.png", "prompt": "a red square"},
        {"image": "b.png", "prompt": "a blue one"},
    ]
    (images / "m.json").write_text(json.dumps(rows), encoding="utf-8")
    (images / "m.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n\n", encoding="utf-8")
    assert prompts_and_sizes(UnifiedDataset(images, images / "m.json")) == EXPECTED
    assert prompts_and_sizes(UnifiedDataset(images, images / "m.jsonl")) == EXPECTED


def test_folder_with_captions(images: Path, caplog: pytest.LogCaptureFixture) -> None:
    (images / "a.txt").write_text("a red square\n", encoding="utf-8")
    (images / "sub").mkdir()
    solid(images / "sub" / "c.jpg", (16, 16))
    (images / "sub" / "c.txt").write_text("nested", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        dataset = UnifiedDataset(images)  # b.png has no caption
    assert dataset.rows == [
        {"image": "a.png", "prompt": "a red square"},
        {"image": "b.png", "prompt": ""},  # trained with an empty prompt, and reported
        {"image": "sub/c.jpg", "prompt": "nested"},
    ]
    assert "b.png" in caplog.text and "no .txt caption" in caplog.text


def test_non_utf8_csv_names_file_and_fix(images: Path) -> None:
    (images / "m.csv").write_bytes("prompt,image\ncafé crème,a.png\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"m\.csv is not UTF-8 .*Re-save it as UTF-8"):
        UnifiedDataset(images, images / "m.csv")


def test_non_utf8_jsonl_and_caption(images: Path) -> None:
    (images / "m.jsonl").write_bytes('{"prompt": "café", "image": "a.png"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"m\.jsonl is not UTF-8"):
        UnifiedDataset(images, images / "m.jsonl")
    (images / "a.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"a\.txt is not UTF-8"):
        UnifiedDataset(images)


def test_missing_required_column_names_it_and_lists_present(images: Path) -> None:
    write_csv(images / "m.csv", "image,caption", "a.png,hello")
    with pytest.raises(
        DatasetError, match=r"no column 'prompt'.*columns present are caption, image"
    ):
        UnifiedDataset(images, images / "m.csv")


def test_missing_data_file_column(images: Path) -> None:
    write_csv(images / "m.csv", "prompt,image", "hi,a.png")
    with pytest.raises(DatasetError, match="no column 'control_image'"):
        UnifiedDataset(
            images,
            images / "m.csv",
            data_file_keys="image,control_image",
            required_columns=("prompt", "control_image"),
        )
    with pytest.raises(DatasetError, match="no column 'photo'"):  # the main key is required
        UnifiedDataset(images, images / "m.csv", data_file_keys="photo,image")


def test_optional_data_file_columns_load_only_where_filled(images: Path) -> None:
    write_csv(images / "m.csv", "prompt,image,mask", "hi,a.png,b.png", "ho,b.png,")
    ds = UnifiedDataset(images, images / "m.csv", data_file_keys="image,mask,reference")
    filled, empty = ds.load(0), ds.load(1)
    assert filled["mask"].size == empty["image"].size  # both are b.png, loaded as images
    assert is_empty_value(empty["mask"]) and "reference" not in empty


def test_column_missing_in_some_json_rows(images: Path) -> None:
    rows = [{"image": "a.png", "prompt": "x"}, {"image": "b.png"}]
    (images / "m.json").write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"in 1 of 2 rows \(first: row 1\)"):
        UnifiedDataset(images, images / "m.json")


@pytest.mark.parametrize(
    ("name", "content"),
    [("m.csv", "prompt,image\n"), ("m.csv", ""), ("m.json", "[]"), ("m.jsonl", "\n")],
)
def test_empty_dataset(images: Path, name: str, content: str) -> None:
    (images / name).write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match="holds no samples"):
        UnifiedDataset(images, images / name)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="holds no samples"):
        UnifiedDataset(tmp_path)


def test_bad_metadata_files(images: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        UnifiedDataset(images, images / "nope.csv")
    (images / "m.json").write_text('{"prompt": "x"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="list of objects"):
        UnifiedDataset(images, images / "m.json")
    (images / "m.jsonl").write_text('{"prompt": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 2\) is not valid JSON"):
        UnifiedDataset(images, images / "m.jsonl")
    (images / "m.parquet").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="unknown format"):
        UnifiedDataset(images, images / "m.parquet")
    with pytest.raises(DatasetError, match="dataset folder .* does not exist"):
        UnifiedDataset(images / "missing")


def test_csv_cells_stay_text(tmp_path: Path) -> None:
    (tmp_path / "0001").mkdir()
    solid(tmp_path / "0001" / "0.png")
    write_csv(tmp_path / "m.csv", "prompt,video", "2024,0001")
    dataset = UnifiedDataset(tmp_path, tmp_path / "m.csv", data_file_keys="video")
    assert dataset.rows == [{"prompt": "2024", "video": "0001"}]
