"""A run is the same whether or not it built the tiny-model cache; sampling shows in the progress
bar and stays out of its rate, ETA and ``samples_per_s``."""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from diffsynth_core.cli.run import presets
from diffsynth_core.training.metrics import MetricsLog
from diffsynth_core.training.sampling import SampleRenderer


def _family(build: Any) -> Any:
    return SimpleNamespace(name="fake", version="1", build_tiny=build)


def _build_like_the_plugins(folder: Path) -> None:
    """As the plugins' tiny.py do: reseed the global RNGs, then draw the weights from them."""
    torch.manual_seed(0)
    weights = torch.randn(4)
    random.random(), np.random.rand()
    torch.save({"w": weights}, folder / "w.pt")


def _build_from_whatever_seed(folder: Path) -> None:
    torch.save({"w": torch.randn(4)}, folder / "w.pt")


def _draws() -> tuple[torch.Tensor, float, float]:
    return torch.rand(3), random.random(), float(np.random.rand())


def _seeded_draws_after(call: Any) -> tuple[torch.Tensor, float, float]:
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    call()
    return _draws()


def test_building_the_tiny_cache_leaves_the_callers_random_state_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path / "cache"))
    family = _family(_build_like_the_plugins)
    building = _seeded_draws_after(lambda: presets.tiny_folder(family))
    cached = _seeded_draws_after(lambda: presets.tiny_folder(family))
    untouched = _seeded_draws_after(lambda: None)
    assert torch.equal(building[0], untouched[0]) and torch.equal(cached[0], untouched[0])
    assert building[1:] == cached[1:] == untouched[1:]


def test_the_tiny_weights_do_not_depend_on_the_callers_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = _family(_build_from_whatever_seed)
    weights = []
    for seed in (1, 2):
        monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path / f"cache-{seed}"))
        torch.manual_seed(seed)
        weights.append(torch.load(presets.tiny_folder(family) / "w.pt")["w"])
    assert torch.equal(weights[0], weights[1])


def _losses(out: Path) -> list[str]:
    with (out / "logs" / "metrics.csv").open() as handle:
        return [row["loss"] for row in csv.DictReader(handle)]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("diffsynth_qwen_image") is None, reason="the qwen-image plugin"
)
def test_the_run_that_builds_the_cache_logs_the_same_losses_as_later_runs(
    image_folder: Path, tmp_path: Path
) -> None:
    """Building Qwen-Image's tiny model reseeds torch; the first run's LoRA init differed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_CACHE": str(tmp_path / "cache")}
    env.pop("DIFFSYNTH_LOAD_PLUGINS", None)  # the installed plugins
    for run in ("first", "second"):
        command = [sys.executable, "-m", "diffsynth_core.cli.main", "train", "--model", "qwen-image", "--preset", "tiny",
                   "--dataset", str(image_folder), "--height", "32", "--width", "32", "--max-steps", "4",
                   "--seed", "3", "--output", str(tmp_path / run)]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = _losses(tmp_path / "first"), _losses(tmp_path / "second")
    assert len(first) == 4 and first == second


# -- sampling in the progress bar ------------------------------------------------------------


def _rows(log: MetricsLog) -> list[dict[str, str]]:
    with log.csv_path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_pause_shows_in_the_bar_and_stays_out_of_rate_eta_and_speed(tmp_path: Path) -> None:
    pause = 3.0  # long against the steps, so a busy machine cannot blur the difference
    with MetricsLog(tmp_path, True, total_steps=100, start_step=0, progress=True) as log:
        for step in (1, 2, 3):
            time.sleep(0.05)
            log.log(step, 0, 1.0, 1e-3, None, 1)
        with log.paused("sampling 2 prompt(s) at step 3"):
            assert log._bar.desc == "sampling 2 prompt(s) at step 3"
            time.sleep(pause)
        time.sleep(0.05)
        log.log(4, 0, 1.0, 1e-3, None, 1)
        shown = log._bar.format_dict
        assert log._bar.desc == "train"
        rows = _rows(log)
    assert shown["elapsed"] < pause / 2  # four steps of ~0.05 s, not the pause
    rate = shown["rate"] or shown["n"] / shown["elapsed"]
    assert (shown["total"] - shown["n"]) / rate < 96 * pause / 2  # the ETA
    assert float(rows[-1]["samples_per_s"]) > 2 / pause  # ~20/s, not 1/(pause + 0.05)


def test_sampling_during_training_says_so_in_the_progress_bar(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import toy_dataset, toy_module, train

    seen: list[str | None] = []
    one = SampleRenderer._one

    def noting(self: SampleRenderer, *args: Any) -> Path:
        bar = self.progress._bar if self.progress is not None else None
        seen.append(bar.desc if bar is not None else None)
        return one(self, *args)

    monkeypatch.setattr(SampleRenderer, "_one", noting)
    train(
        toy_module(tiny_toy), toy_dataset(tmp_path / "data"), tmp_path / "out", max_steps=2,
        sample_prompts=["a", "b"], sample_every=2, sample_height=32, sample_width=32,
        sample_steps=2, progress=True,
    )  # fmt: skip
    # before training, at step 2, then after training (the bar is closed by then)
    assert (
        seen
        == ["sampling 2 prompt(s) at step 0"] * 2
        + ["sampling 2 prompt(s) at step 2"] * 2
        + [None] * 2
    )
