"""Real processes: the seed-style script under `accelerate launch` on 2 CPU processes, and a
SIGTERM sent to a running `diffsynth train`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from diffsynth_core.cli.main import build_cli

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_LOAD_PLUGINS": "", **extra}
    env.pop("DIFFSYNTH_DEBUG", None)
    return env


def test_seed_style_script_trains_data_parallel_on_two_cpu_processes(
    tiny_toy: Path, image_folder: Path, tmp_path: Path
) -> None:
    out, dump = tmp_path / "out", tmp_path / "dump"
    dump.mkdir()
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]  # fmt: skip
    command = [
        *launch,
        str(HERE / "seed_train.py"),
        str(tiny_toy),
        str(image_folder),
        str(out),
        str(dump),
    ]
    done = subprocess.run(
        command, env=_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (
        load_file(str(dump / "rank0.safetensors")),
        load_file(str(dump / "rank1.safetensors")),
    )
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    with safe_open(str(dump / "rank0.safetensors"), "pt") as handle:
        assert handle.metadata()["steps"] == "8"  # 4 images x 2 repeats / 2 processes x 2 epochs
    assert (dump / "writes-rank1.txt").read_text() == ""  # only the main process writes
    assert (dump / "writes-rank0.txt").read_text().split() == [
        "step-000003.safetensors",
        "state/step-000003",
        "epoch-0.safetensors",
        "state/step-000004",
        "step-000006.safetensors",
        "state/step-000006",
        "epoch-1.safetensors",
        "state/step-000008",
        "final.safetensors",
    ]  # fmt: skip (save_every_n_steps=3: step saves are collective too)
    final = load_file(str(out / "final.safetensors"))
    assert all(
        torch.equal(
            final["transformer." + k.removeprefix("pipe.dit.").replace(".default.", ".")], v
        )
        for k, v in rank0.items()
    )


def _wait_for_rows(
    metrics: Path, rows: int, process: subprocess.Popen, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {rows} metric rows in time; process returned {process.poll()}")


def test_sigterm_saves_state_and_resume_matches_an_unbroken_run(
    toy_manager: Any, image_folder: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = ["train", "--model", "toy", "--preset", "tiny", "--dataset", str(image_folder), "--max-steps", "10",
            "--height", "32", "--width", "32", "--learning-rate", "1e-2", "--batch-size", "2", "--seed", "5"]  # fmt: skip
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(HERE / "toy_cli.py"), *args, "--output", str(run)],
        env=_env(DIFFSYNTH_CACHE=str(cache), TOY_STEP_DELAY="0.3"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    _wait_for_rows(run / "logs" / "metrics.csv", 2, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "--resume latest" in output
    states = sorted((run / "state").iterdir())
    assert len(states) == 1 and 2 <= int(states[0].name.split("-")[1]) < 10

    os.environ["DIFFSYNTH_CACHE"] = str(cache)
    try:
        cli = build_cli(toy_manager)
        resumed = CliRunner().invoke(cli, [*args, "--output", str(run), "--resume", "latest"])
        unbroken = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "unbroken")])
    finally:
        del os.environ["DIFFSYNTH_CACHE"]
    assert resumed.exit_code == 0 and unbroken.exit_code == 0, resumed.output + unbroken.output
    expected, got = (
        load_file(str(tmp_path / "unbroken" / "final.safetensors")),
        load_file(str(run / "final.safetensors")),
    )
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
