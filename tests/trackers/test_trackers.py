"""``--report-to``: the run's trackers are accelerate's, fed the rows of ``logs/metrics.csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.main import build_cli


def _train(tiny: Path, data: Path, out: Path, *extra: str) -> Any:
    flags = ["train", "--model", "toy", "--model-path", str(tiny), "--dataset", str(data),
             "--output", str(out), "--height", "32", "--width", "32", "--seed", "1", *extra]  # fmt: skip
    return CliRunner().invoke(build_cli(), flags)


def _csv_losses(out: Path) -> dict[int, float]:
    with (out / "logs" / "metrics.csv").open() as handle:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(handle)}


def _event_losses(folder: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    from diffsynth_core.testing import make_image_dataset

    return make_image_dataset(tmp_path / "data", 2, 32)


@pytest.mark.slow
def test_tensorboard_through_accelerate_holds_the_csv_losses(
    toy_manager: Any, tiny_toy: Path, data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    done = _train(tiny_toy, data, out, "--max-steps", "3")
    assert done.exit_code == 0, done.output
    logged = _event_losses(out / "logs" / "run")  # the run's name is the output folder's
    expected = _csv_losses(out)
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [v for _, v in logged] == pytest.approx([expected[s] for s in (1, 2, 3)], rel=1e-6)


@pytest.mark.slow
def test_resume_appends_to_the_same_tensorboard_run(
    toy_manager: Any, tiny_toy: Path, data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    first = _train(tiny_toy, data, out, "--max-steps", "4", "--save-every-n-steps", "2", "--keep-last", "2")
    assert first.exit_code == 0, first.output
    # resume from step 2: the steps 3 and 4 the first start logged are replaced, not doubled
    again = _train(tiny_toy, data, out, "--max-steps", "5", "--resume", str(out / "state" / "step-000002"))
    assert again.exit_code == 0, again.output
    folder = out / "logs" / "run"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one run folder, two files
    logged = _event_losses(folder)
    expected = _csv_losses(out)
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5] == sorted(expected)
    assert [v for _, v in logged] == pytest.approx([expected[s] for s in range(1, 6)], rel=1e-6)


def test_report_to_none_writes_only_the_csv(
    toy_manager: Any, tiny_toy: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    done = _train(tiny_toy, data, out, "--max-steps", "2", "--report-to", "none")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["metrics.csv"]
    assert sorted(_csv_losses(out)) == [1, 2]


def test_missing_default_tensorboard_is_a_start_up_note(
    toy_manager: Any, tiny_toy: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsynth_core.training import trackers

    monkeypatch.setattr(trackers, "installed_trackers", lambda: set())
    out = tmp_path / "run"
    done = _train(tiny_toy, data, out, "--max-steps", "2")
    assert done.exit_code == 0, done.output
    assert "note: TensorBoard is not installed: logs/metrics.csv only" in done.output
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["metrics.csv"]


def test_an_asked_for_tracker_that_is_not_installed_is_an_error(
    toy_manager: Any, tiny_toy: Path, data: Path, tmp_path: Path
) -> None:
    from diffsynth_core.training.trackers import installed_trackers

    if "wandb" in installed_trackers():
        pytest.skip("wandb is installed here: nothing to refuse")
    out = tmp_path / "run"
    done = _train(tiny_toy, data, out, "--max-steps", "2", "--report-to", "tensorboard,wandb")
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        "error: --report-to wandb: wandb is not installed (pip install wandb, or pip install "
        "'diffsynth-core[wandb]'), or leave wandb out of --report-to"
    ]
    assert not out.exists()  # refused before anything was written


def test_an_unknown_tracker_names_the_known_ones() -> None:
    from diffsynth_core.errors import ConfigError
    from diffsynth_core.training.trackers import resolve_report_to

    with pytest.raises(ConfigError, match="not a tracker accelerate knows; one of aim, .*tensorboard"):
        resolve_report_to("tensorbord")
    assert resolve_report_to(" none ") == ([], [])


@pytest.mark.slow
def test_validation_losses_reach_the_trackers_as_in_validation_csv(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    """(The validation loss went to a TensorBoard writer that the trackers replaced: the first
    evaluation raised AttributeError.)"""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from diffsynth_core.testing import make_image_dataset

    pytest.importorskip("tensorboard")
    data = make_image_dataset(tmp_path / "data", 4, 32)
    out = tmp_path / "run"
    done = _train(tiny_toy, data, out, "--max-steps", "2", "--validation-split", "0.5",
                  "--validation-every", "1")  # fmt: skip
    assert done.exit_code == 0, done.output
    with (out / "logs" / "validation.csv").open() as handle:
        expected = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(handle)]
    events = EventAccumulator(str(out / "logs" / "run"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("val/loss")]
    assert [s for s, _ in logged] == [s for s, _ in expected] == [0, 1, 2]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-5)


@pytest.mark.slow
def test_the_run_settings_are_the_trackers_hyperparameters(
    toy_manager: Any, tiny_toy: Path, data: Path, tmp_path: Path
) -> None:
    """TensorBoard gets training_args.json's settings as hparams (accelerate writes them to an
    hparams.yml too): a user comparing runs sees the learning rate and rank."""
    pytest.importorskip("tensorboard")
    import json

    import yaml

    out = tmp_path / "run"
    done = _train(tiny_toy, data, out, "--max-steps", "2", "--learning-rate", "3e-4", "--lora-rank", "4")
    assert done.exit_code == 0, done.output
    files = list((out / "logs" / "run").rglob("hparams.yml"))  # in TensorBoard's hparams run
    assert len(files) == 1
    hparams = yaml.safe_load(files[0].read_text())
    saved = json.loads((out / "training_args.json").read_text())
    assert hparams["config/learning_rate"] == 3e-4 and hparams["config/lora_rank"] == 4
    assert hparams["family"] == saved["family"] == "toy"
    assert hparams["config/max_steps"] == 2 and "command" not in hparams
    assert all(isinstance(v, (bool, int, float, str)) for v in hparams.values())


def test_tracker_config_flattens_and_keeps_only_plain_values() -> None:
    from diffsynth_core.training.trackers import tracker_config

    flat = tracker_config({"config": {"rank": 4, "dropout": None, "targets": ["a", "b"],
                                      "path": Path("x")}, "command": ["diffsynth"], "n": 2})  # fmt: skip
    assert flat == {"config/rank": 4, "config/dropout": "none", "config/targets": "a,b",
                    "config/path": "x", "n": 2}  # fmt: skip
