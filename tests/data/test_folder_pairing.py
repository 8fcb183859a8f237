"""A folder without metadata: each image is captioned by its own same-named file, and nothing
that does not pair (a stray .txt, an uncaptioned image) ever shifts a caption onto another image.

Every image below is a solid colour whose caption names that colour, so a caption paired with
the wrong image shows as a mismatch between a row's prompt and its pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from diffsynth_core.data import UnifiedDataset, validate
from diffsynth_core.errors import ConfigError, DatasetError

from .media import solid

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255,) * 3}


def picture(folder: Path, name: str, colour: str, caption: str | bytes | None = None) -> None:
    """``name`` (e.g. ``sub/b.png``) filled with ``colour``; its caption file if given."""
    solid(folder / name, (16, 16), COLOURS[colour])
    if caption is not None:
        text_file = (folder / name).with_suffix(".txt")
        if isinstance(caption, bytes):
            text_file.write_bytes(caption)
        else:
            text_file.write_text(caption, encoding="utf-8")


def prompts_by_colour(dataset: UnifiedDataset) -> dict[str, str]:
    """{row's image path: prompt}, after checking each prompt names its image's colour."""
    pairs = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        colour = next(c for c, rgb in COLOURS.items() if sample["image"].getpixel((8, 8)) == rgb)
        prompt = sample["prompt"]
        assert prompt == "" or colour in prompt, f"{sample}: the {colour} image got {prompt!r}"
        pairs[dataset.rows[index]["image"]] = prompt
    return pairs


def test_stray_text_files_are_reported_never_paired(tmp_path: Path) -> None:
    (tmp_path / "LICENSE.txt").write_text("MIT license, all rights ...", encoding="utf-8")
    picture(tmp_path, "a.png", "red", "a red square")
    picture(tmp_path, "b.png", "green", "a green square")
    (tmp_path / "notes.txt").write_text("remember to add the blue one", encoding="utf-8")
    picture(tmp_path, "c.png", "blue", "a blue square")
    dataset = UnifiedDataset(tmp_path)
    assert prompts_by_colour(dataset) == {
        "a.png": "a red square",
        "b.png": "a green square",
        "c.png": "a blue square",
    }
    assert dataset.notes == [
        "2 .txt file(s) match no media file and are not used: LICENSE.txt, notes.txt"
    ]
    assert "Note: 2 .txt file(s) match no media file" in validate(dataset).format()


def test_an_uncaptioned_image_trains_with_an_empty_prompt_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    picture(tmp_path, "a.png", "red", "a red square")
    picture(tmp_path, "b.png", "green")  # no caption: the next one's must not slide onto it
    picture(tmp_path, "c.png", "blue", "a blue square")
    with caplog.at_level(logging.WARNING):
        dataset = UnifiedDataset(tmp_path)
    assert prompts_by_colour(dataset) == {
        "a.png": "a red square",
        "b.png": "",
        "c.png": "a blue square",
    }
    note = "1 file(s) have no .txt caption and train with an empty prompt: b.png"
    assert dataset.notes == [note] and note in caplog.text


def test_images_sharing_a_stem_both_get_its_caption(tmp_path: Path) -> None:
    picture(tmp_path, "cat.png", "white", "a white cat")
    picture(tmp_path, "cat.jpg", "white")  # same stem: cat.txt is named like both
    picture(tmp_path, "dog.png", "red", "a red dog")
    dataset = UnifiedDataset(tmp_path)
    assert prompts_by_colour(dataset) == {
        "cat.jpg": "a white cat",
        "cat.png": "a white cat",
        "dog.png": "a red dog",
    }
    assert dataset.notes == [
        "1 caption(s) are named like several files, which all get it: cat.txt (cat.jpg, cat.png)"
    ]


def test_nested_folders_pair_within_their_own_folder(tmp_path: Path) -> None:
    picture(tmp_path, "a.png", "red", "a red top-level square")
    picture(tmp_path, "sub/a.png", "green")  # a.txt of the parent folder is not its caption
    picture(tmp_path, "sub/b.png", "blue", "a blue nested square")
    (tmp_path / "sub" / "deeper").mkdir()
    (tmp_path / "sub" / "deeper" / "b.txt").write_text("orphan", encoding="utf-8")
    picture(tmp_path, ".ipynb_checkpoints/a-checkpoint.png", "white", "white: hidden")
    dataset = UnifiedDataset(tmp_path)
    assert prompts_by_colour(dataset) == {
        "a.png": "a red top-level square",
        "sub/a.png": "",
        "sub/b.png": "a blue nested square",
    }
    assert (
        dataset.notes[1] == "1 .txt file(s) match no media file and are not used: sub/deeper/b.txt"
    )


def test_captions_with_a_bom_and_crlf_are_their_text(tmp_path: Path) -> None:
    picture(tmp_path, "a.png", "red", "\ufeffa red square, line one\r\nline two\r\n".encode())
    picture(tmp_path, "b.png", "green", b"a green square\r\n\r\n")
    dataset = UnifiedDataset(tmp_path)
    assert prompts_by_colour(dataset) == {
        "a.png": "a red square, line one\nline two",
        "b.png": "a green square",
    }


def test_caption_extension_option(tmp_path: Path) -> None:
    picture(tmp_path, "a.png", "red", "a red square (a .txt: not the caption now)")
    (tmp_path / "a.caption").write_text("red, the .caption file", encoding="utf-8")
    picture(tmp_path, "b.png", "green")
    (tmp_path / "b.caption").write_text("green, the .caption file", encoding="utf-8")
    dataset = UnifiedDataset(tmp_path, caption_extension=".caption")
    assert prompts_by_colour(dataset) == {
        "a.png": "red, the .caption file",
        "b.png": "green, the .caption file",
    }
    assert dataset.notes == []  # a.txt is not a caption file here, so not an unpaired one
    with pytest.raises(ConfigError, match="caption_extension must be a suffix"):
        UnifiedDataset(tmp_path, caption_extension="txt")


def test_a_folder_where_no_image_has_a_caption_is_refused(tmp_path: Path) -> None:
    picture(tmp_path, "a.png", "red")
    (tmp_path / "readme.txt").write_text("red pictures", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no file in .* has a same-named \.txt caption"):
        UnifiedDataset(tmp_path)
