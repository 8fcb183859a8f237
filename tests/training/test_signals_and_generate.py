"""Stopping a run from outside (signals to the whole process group, Ctrl-C while loading) and
what ``diffsynth generate`` refuses before it loads a model: real processes and the CLI."""

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
from click.testing import CliRunner, Result
from safetensors.torch import load_file, save_file

from diffsynth_core.cli.main import build_cli
from diffsynth_core.training.signals import SECOND_CTRL_C

HERE = Path(__file__).parent
TOY = ["--model", "toy", "--preset", "tiny"]
SMALL = ["--height", "32", "--width", "32"]

# Loads like toy_cli.py, but model loading announces itself and then takes a minute.
SLOW_LOAD = """
import sys, time
import diffsynth_core.pipeline as pipeline
from diffsynth_core.cli.main import main
from diffsynth_core.testing import use_toy_plugin

def slow_load(*args, **kwargs):
    print("LOADING", flush=True)
    time.sleep(60)

pipeline.load_pipeline = slow_load
use_toy_plugin()
main(sys.argv[1:])
"""


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_LOAD_PLUGINS": "", **extra}
    env["DIFFSYNTH_CACHE"] = str(cache)
    env.pop("DIFFSYNTH_DEBUG", None)
    return env


def _wait_for(condition: Any, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} in time; process returned {process.poll()}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_with_workers_saves_at_the_stop(
    sig: signal.Signals, image_folder: Path, tmp_path: Path
) -> None:
    """The signal reaches the DataLoader workers too (a scheduler's kill of the job, a
    terminal's Ctrl-C); they used to die of it and the main process raised instead of saving."""
    run = tmp_path / "run"
    command = [sys.executable, str(HERE / "toy_cli.py"), "train", *TOY, *SMALL, "--dataset", str(image_folder),
               "--max-steps", "200", "--num-workers", "2", "--output", str(run)]  # fmt: skip
    process = subprocess.Popen(
        command, env=_env(tmp_path / "cache", TOY_STEP_DELAY="0.2"), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = run / "logs" / "metrics.csv"
    _wait_for(
        lambda: metrics.exists() and len(metrics.read_text().splitlines()) > 2, process, "2 steps"
    )
    os.killpg(process.pid, sig)  # the whole group: the CLI and its two workers
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    stopped = int(stdout.split(" at step ")[1].split(";")[0])
    assert f"stopped by {sig.name} at step {stopped}" in stdout and 2 <= stopped < 200
    assert [p.name for p in (run / "state").iterdir()] == [f"step-{stopped:06d}"]
    saved = load_file(str(run / f"step-{stopped:06d}.safetensors"))  # the step checkpoint
    assert saved and all(torch.isfinite(t).all() for t in saved.values())


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "generate"])
def test_ctrl_c_while_loading_is_one_line_and_status_130(
    command: str, image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = (
        ["train", *TOY, *SMALL, "--dataset", str(image_folder), "--output", str(out)]
        if command == "train"
        else ["generate", *TOY, "--prompt", "x", "--output", str(out / "x.png")]
    )
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_LOAD, *args], env=_env(tmp_path / "cache"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    _wait_for(lambda: process.stdout.readline().startswith("LOADING"), process, "loading")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: Ctrl-C before the command finished"]
    assert not out.exists()  # nothing of the run was written


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_with_one_line(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, str(HERE / "toy_cli.py"), "train", *TOY, *SMALL, "--dataset", str(image_folder),
               "--max-steps", "50", "--output", str(run)]  # fmt: skip
    process = subprocess.Popen(
        command, env=_env(tmp_path / "cache", TOY_STEP_DELAY="2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = run / "logs" / "metrics.csv"
    _wait_for(
        lambda: metrics.exists() and len(metrics.read_text().splitlines()) > 1, process, "a step"
    )
    for _ in range(2):  # both within one (2 s) step: the first one's save never comes
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"interrupted: {SECOND_CTRL_C}"


# -- generate: refused before the model loads ----------------------------------------------------


@pytest.fixture
def cli(
    toy_manager: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path_factory.getbasetemp() / "diffsynth-cache"))
    monkeypatch.delenv("DIFFSYNTH_DEBUG", raising=False)

    def invoke(*args: Any) -> Result:
        return CliRunner().invoke(build_cli(toy_manager), [str(a) for a in args])

    return invoke


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model loading fails the test: what is refused must be refused before it."""

    def loaded(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("diffsynth_core.cli.run.presets.model_configs", loaded)
    monkeypatch.setattr("diffsynth_core.pipeline.load_pipeline", loaded)


def _generate(cli: Any, output: Path, *more: Any) -> Result:
    return cli("generate", *TOY, *SMALL, "--steps", "2", "--prompt", "x", "--output", output, *more)


def _one_error_line(result: Result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(word in lines[0] for word in words), lines[0]


def _unwritable_folder(tmp_path: Path) -> Path:
    if (
        getattr(os, "geteuid", lambda: 1)() == 0
    ):  # root writes through permission bits; /proc takes no new files
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("folder", ["is a folder", "give a file name"]),
        ("x", ["no extension", ".png"]),
        ("x.gif2", ["unknown extension .gif2", ".png"]),
        ("x.mp4", ["a video file", "this family makes images", "x.png"]),
        ("a-file/x.png", ["cannot write in", "a-file"]),
        ("read-only", ["cannot write in", "give another --output"]),
    ],
)
def test_generate_refuses_an_output_it_cannot_write_before_loading(
    cli: Any, no_loading: None, tmp_path: Path, name: str, words: list[str]
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    output = _unwritable_folder(tmp_path) / "x.png" if name == "read-only" else tmp_path / name
    _one_error_line(_generate(cli, output), *words)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--steps", "0"], ["--steps 0", "at least 1"]),
        (["--height", "-8"], ["--height -8", "at least 1"]),
        (["--fps", "0"], ["--fps 0"]),
        (["--lora-scale", "nan"], ["--lora-scale nan", "finite", "100"]),
        (["--lora-scale", "inf"], ["--lora-scale inf", "finite"]),
        (["--lora-scale", "1e30"], ["--lora-scale 1e+30", "between -100 and 100"]),
        (["--lora-scale", "-101"], ["--lora-scale -101"]),
    ],
)
def test_generate_refuses_out_of_range_settings_before_loading(
    cli: Any, no_loading: None, tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    _one_error_line(_generate(cli, tmp_path / "x.png", *flags), *words)
    assert not (tmp_path / "x.png").exists()


# -- generate: LoRA files that would make a black image ------------------------------------------


@pytest.fixture
def trained_lora(cli: Any, image_folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    result = cli(
        "train", *TOY, *SMALL, "--dataset", image_folder, "--max-steps", "2", "--output", out
    )
    assert result.exit_code == 0, result.output
    return out / "final.safetensors"


def _variant(lora: Path, value: float, folder: Path, module: str = "to_k") -> Path:
    """``lora`` with the LoRA A and B of the first ``module`` set to ``value`` everywhere."""
    tensors = load_file(str(lora))
    name = sorted(k for k in tensors if f".{module}.lora_A." in k)[0].split(".lora_A.")[0]
    for key in (f"{name}.lora_A.weight", f"{name}.lora_B.weight"):
        tensors[key] = torch.full_like(tensors[key], value)
    path = folder / f"lora-{value}-{module}.safetensors"
    save_file(tensors, str(path))
    return path


def test_generate_refuses_a_lora_that_holds_nan(
    cli: Any, trained_lora: Path, tmp_path: Path
) -> None:
    """Needs the non-finite check in the LoRA reader (lora/inject.py) as well."""
    result = _generate(
        cli, tmp_path / "x.png", "--lora", _variant(trained_lora, float("nan"), tmp_path)
    )
    _one_error_line(result)
    assert not (tmp_path / "x.png").exists()


def test_generate_warns_when_the_final_latents_are_not_finite(
    cli: Any, trained_lora: Path, tmp_path: Path
) -> None:
    good = _generate(cli, tmp_path / "good.png", "--lora", trained_lora)
    assert good.exit_code == 0 and "warning" not in good.output, good.output
    # finite weights whose product B @ A overflows float32: the image came out black, silently
    huge_lora = _variant(trained_lora, 1e20, tmp_path, "to_out")
    huge = _generate(cli, tmp_path / "huge.png", "--lora", huge_lora)
    assert huge.exit_code == 0, huge.output
    assert "warning: the final latents hold NaN or inf values" in huge.output
    assert (tmp_path / "huge.png").exists()
