"""Bad edit rows: a missing or unreadable edit image follows the bad-sample policy (skipped
and recorded, or an error naming it) and ``--check-data`` names the row, column and file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.main import build_cli
from diffsynth_core.data import UnifiedDataset
from diffsynth_core.errors import BadSampleError
from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager
from diffsynth_core.testing import make_image


@pytest.fixture()
def bad_edit_data(tmp_path: Path) -> Path:
    """Row 0 is good, row 1's edit image is missing, row 2's is not a PNG inside."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        make_image((200, 30 * i, 40), (32, 32), i).save(folder / f"target_{i}.png")
    make_image((20, 200, 40), (32, 32), 0).save(folder / "edit_0.png")
    (folder / "edit_2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "edit_image", "prompt"))
        writer.writerows((f"target_{i}.png", f"edit_{i}.png", "make it green") for i in range(3))
    return folder


def test_check_data_names_the_bad_edit_images(bad_edit_data: Path, tmp_path: Path) -> None:
    manager = build_plugin_manager()
    reset_plugin_manager(manager)
    try:
        result = CliRunner().invoke(build_cli(manager), [
            "train", "--model", "qwen-image-edit", "--dataset", str(bad_edit_data),
            "--output", str(tmp_path / "run"), "--check-data", "--height", "32", "--width", "32",
        ])  # fmt: skip
    finally:
        reset_plugin_manager(None)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    refused = [line for line in result.output.splitlines() if "edit_" in line]
    assert any("edit_1.png" in line for line in refused), result.output
    assert any("edit_2.png" in line for line in refused), result.output
    assert "edit_0.png" not in result.output  # the good row is not named
    assert not (tmp_path / "run").exists()  # a check writes no run


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_a_bad_edit_image_follows_the_bad_sample_policy(bad_edit_data: Path, policy: str) -> None:
    from diffsynth_qwen_image.edit_family import qwen_image_edit_family

    defaults = qwen_image_edit_family().defaults
    dataset = UnifiedDataset(
        bad_edit_data, bad_edit_data / "metadata.csv", data_file_keys=defaults.data_file_keys,
        required_columns=defaults.required_columns, on_bad_sample=policy,
    )  # fmt: skip
    assert dataset[0] is not None and dataset[0]["edit_image"].size == (32, 32)
    if policy == "error":
        with pytest.raises(BadSampleError, match="edit_1.png"):
            dataset.load(1)
        return
    assert dataset[1] is None and dataset[2] is None
    columns = [(r["row"], r["column"]) for r in dataset.bad_records]
    assert columns == [(1, "edit_image"), (2, "edit_image")]
