"""Validation loss: fixed timesteps and noise (the same weights give the same number), no
effect on training, logged beside the training loss; ``--validation-split`` holds rows out."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from click.testing import CliRunner
from training.conftest import lora_weights, toy_dataset, toy_module, train

from diffsynth_core.training.metrics import smoothed
from diffsynth_core.training.validation import TIMESTEP_FRACTIONS, Validation

pytestmark = pytest.mark.usefixtures("toy_manager")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_same_weights_give_the_same_loss_at_the_fixed_timesteps(tiny_toy: Path, tmp_path: Path) -> None:
    module = toy_module(tiny_toy)
    validation = Validation(toy_dataset(tmp_path / "val", n=3), every=1)
    accelerator = Accelerator(cpu=True)
    seen: list[float] = []
    model_fn = module.pipe.model_fn

    def recording(**inputs: Any) -> Any:
        seen.append(float(inputs["timestep"][0]))
        return model_fn(**inputs)

    module.pipe.model_fn = recording
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = validation.loss(accelerator, module)
    assert torch.equal(torch.get_rng_state(), state)  # the run's RNG is untouched
    assert validation.loss(accelerator, module) == first
    timesteps = module.pipe.scheduler.timesteps
    n = len(timesteps)
    wanted = [float(timesteps[int(f * n)]) for f in TIMESTEP_FRACTIONS]
    assert seen[:4] == wanted and seen == wanted * 3 * 2  # 3 samples, twice
    for param in module.trainable_modules():
        param.data.normal_()
    assert validation.loss(accelerator, module) != first  # other weights, another number


def test_validation_does_not_change_training_and_is_logged(tiny_toy: Path, tmp_path: Path) -> None:
    data, held_out = toy_dataset(tmp_path / "data"), toy_dataset(tmp_path / "val", n=2)
    plain = toy_module(tiny_toy)
    train(plain, data, tmp_path / "plain", max_steps=5)
    start = toy_module(tiny_toy)
    expected_first = Validation(held_out, 1).loss(Accelerator(cpu=True), start)
    validated = toy_module(tiny_toy)
    train(validated, data, tmp_path / "val-run", max_steps=5, validation_data=held_out,
          validation_every=2)  # fmt: skip
    a, b = lora_weights(plain), lora_weights(validated)
    assert all(torch.equal(a[k], b[k]) for k in a)  # trained exactly as without validation
    rows = _rows(tmp_path / "val-run" / "logs" / "validation.csv")
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 5]  # before, every 2, and the end
    assert float(rows[0]["val_loss"]) == pytest.approx(expected_first, rel=1e-5)
    assert rows[0]["val_loss_ema"] == ""
    losses = [r["loss"] for r in _rows(tmp_path / "val-run" / "logs" / "metrics.csv")]
    assert losses == [r["loss"] for r in _rows(tmp_path / "plain" / "logs" / "metrics.csv")]


def test_smoothing_is_debiased() -> None:
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    values = [1.0, 0.0] * 50
    assert max(smoothed(values)[20:]) < 0.7 and min(smoothed(values)[20:]) > 0.3


def test_cli_validation_split_with_ema(
    toy_manager: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.testing import make_image_dataset

    image_folder = make_image_dataset(tmp_path / "data", 4, 32)
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train", "--model", "toy", "--preset", "tiny", "--dataset", image_folder, "--output", out,
            "--max-steps", 4, "--height", 32, "--width", 32, "--learning-rate", "1e-2",
            "--validation-split", "0.25", "--validation-every", 2, "--ema-decay", "0.5"]  # fmt: skip
    result = CliRunner().invoke(build_cli(toy_manager), [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "4 rows" not in result.output and "3 rows" in result.output  # one row held out
    state = json.loads(next((out / "state").glob("step-*/trainer_state.json")).read_text())
    assert state["layout"]["dataset_size"] == 3
    rows = _rows(out / "logs" / "validation.csv")
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    assert rows[0]["val_loss"] == rows[0]["val_loss_ema"]  # at step 0 the EMA is the weights
    assert rows[-1]["val_loss"] != rows[-1]["val_loss_ema"]
    assert (out / "final-ema.safetensors").is_file()
    if (out / "loss.png").exists():  # matplotlib installed
        assert (out / "loss.png").stat().st_size > 0


def test_a_resumed_run_logs_the_unbroken_runs_validation_losses(tiny_toy: Path, tmp_path: Path) -> None:
    data, held_out = toy_dataset(tmp_path / "data"), toy_dataset(tmp_path / "val", n=2)
    options = {"validation_data": held_out, "validation_every": 2, "ema_decay": 0.5}
    train(toy_module(tiny_toy), data, tmp_path / "a", max_steps=4, **options)
    train(toy_module(tiny_toy), data, tmp_path / "b", max_steps=3, **options)
    train(toy_module(tiny_toy), data, tmp_path / "b", max_steps=4, resume="latest", **options)
    a, b = (_rows(tmp_path / run / "logs" / "validation.csv") for run in ("a", "b"))
    assert [int(r["step"]) for r in a] == [0, 2, 4]
    assert a == b  # the row of the first run's end (step 3) went; the numbers are the same
