"""The timestep, loss and caption flags of ``diffsynth train`` reach the loss, the schedule
and the dataset, and change what a run trains on."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.main import build_cli


def _flags(tiny: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", "toy", "--model-path", str(tiny), "--dataset", str(data), "--output", str(out),
            "--height", "32", "--width", "32", "--seed", "1", *extra]  # fmt: skip


def test_flags_reach_the_loss_the_schedule_and_the_dataset(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    from accelerate import Accelerator

    from diffsynth_core.cli.run import build
    from diffsynth_core.testing import make_image_dataset

    data = make_image_dataset(tmp_path / "data", 2, 32)
    given = {
        "model": "toy", "model_path": str(tiny_toy), "dataset": str(data), "timestep_sampling": "shift",
        "sigmoid_scale": 0.8, "flow_shift": 2.0, "loss_type": "huber", "huber_delta": 0.3,
        "loss_weighting": "none", "caption_dropout": 0.25, "trigger_word": "sks", "seed": 7,
    }  # fmt: skip
    run = build.prepare(given, None, [])
    module, _ = build.build_module(run, Accelerator(cpu=True))
    extra = module.extra_inputs
    assert (extra["timestep_sampling"], extra["sigmoid_scale"]) == ("shift", 0.8)
    assert (extra["loss_type"], extra["huber_delta"], extra["loss_weighting"]) == ("huber", 0.3, "none")
    scheduler = module.pipe.scheduler
    assert scheduler.config.training_shift == 2.0
    assert float(scheduler.sigmas[500]) == pytest.approx(2 * 0.5 / 1.5, abs=2e-3)  # not the toy's 3
    transform = build.build_dataset(run.config, run.family).caption_transform
    assert (transform.dropout, transform.trigger_word, transform.seed) == (0.25, "sks", 7)

    plain = build.prepare({k: given[k] for k in ("model", "model_path", "dataset")}, None, [])
    module, _ = build.build_module(plain, Accelerator(cpu=True))
    assert float(module.pipe.scheduler.sigmas[500]) == pytest.approx(3 * 0.5 / 2, abs=2e-3)
    assert module.extra_inputs["loss_type"] == "mse"


def _losses(out: Path) -> list[float]:
    with (out / "logs" / "metrics.csv").open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_loss_type_changes_the_trained_losses(toy_manager: Any, tiny_toy: Path, tmp_path: Path) -> None:
    from diffsynth_core.testing import make_image_dataset

    data = make_image_dataset(tmp_path / "data", 2, 32)
    runs = {}
    for name, extra in {"mse": (), "l1": ("--loss-type", "l1")}.items():
        out = tmp_path / name
        result = CliRunner().invoke(
            build_cli(toy_manager), ["train", *_flags(tiny_toy, data, out, "--max-steps", "2", *extra)]
        )
        assert result.exit_code == 0, result.output
        runs[name] = _losses(out)
    assert all(abs(a - b) > 1e-6 for a, b in zip(runs["mse"], runs["l1"], strict=True))


def test_flow_shift_with_dynamic_shift_is_one_error_line(toy_manager: Any, tiny_toy: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_cli(toy_manager),
        ["train", *_flags(tiny_toy, tmp_path, tmp_path / "out", "--flow-shift", "2", "--dynamic-shift")],
    )
    assert result.exit_code == 1 and "give one of them" in result.output
