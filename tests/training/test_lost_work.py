"""No lost work: finished runs, --overwrite, refused starts, two runs on one folder, resumed
settings, out-of-range values, unusable output folders, a full disk, --keep-last (issue 9).

Each test drives the real ``diffsynth train`` on the toy family (in process, or as a real
process where a second one must run at the same time).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import load_file

from diffsynth_core.cli.main import build_cli

HERE = Path(__file__).parent


@pytest.fixture
def cli(
    toy_manager: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    cache = tmp_path_factory.getbasetemp() / "diffsynth-cache"  # the tiny preset is built once
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(cache))
    monkeypatch.delenv("DIFFSYNTH_DEBUG", raising=False)

    def invoke(*args: Any) -> Result:
        return CliRunner().invoke(build_cli(toy_manager), [str(a) for a in args])

    return invoke


@pytest.fixture
def train_args(image_folder: Path) -> tuple[str, ...]:
    return ("train", "--model", "toy", "--preset", "tiny", "--dataset", str(image_folder),
            "--height", "32", "--width", "32", "--learning-rate", "2e-3")  # fmt: skip


def _metrics(out: Path) -> list[dict[str, str]]:
    with (out / "logs" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _states(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "state").iterdir())


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _one_error_line(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and message in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


# -- 10 (part): settings that cannot be right ------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--learning-rate", "nan"), ("--learning-rate", "inf"), ("--max-grad-norm", "inf")],
)
def test_non_finite_settings_are_refused_before_anything_loads(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path, flag: str, value: str
) -> None:
    out = tmp_path / "run"
    result = cli(*train_args, "--output", out, flag, value)
    _one_error_line(result, f"{flag} must be a finite number, not {value}")
    assert "diffsynth train:" not in result.output and not out.exists()


def test_a_batch_larger_than_the_dataset_reports_the_samples_it_really_holds(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    result = cli(*train_args, "--output", tmp_path / "run", "--batch-size", 1000, "--max-steps", 1)
    assert result.exit_code == 0, result.output
    assert "= 4 per step (not 1000" in result.output  # 4 images of one size: one batch of 4


# -- 20 (part): --keep-last, and what each process prints ------------------------------------


def test_keep_last_prunes_epoch_checkpoints_too(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = cli(*train_args, "--output", out, "--num-epochs", 4, "--keep-last", 1)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "epoch-3.safetensors",
        "final.safetensors",
    ]
