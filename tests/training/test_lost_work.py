"""No lost work: finished runs, --overwrite, refused starts, two runs on one folder, resumed
settings, out-of-range values, unusable output folders, a full disk, --keep-last (issue 9).

Each test drives the real ``diffsynth train`` on the toy family (in process, or as a real
process where a second one must run at the same time).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import time
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


# -- 1: a finished run -------------------------------------------------------------------------


def test_resuming_a_finished_run_is_a_no_op_that_says_so(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = (*train_args, "--output", out, "--max-steps", 3)  # 4 images: it ends mid-epoch
    assert cli(*args).exit_code == 0
    final = out / "final.safetensors"
    before, stamp = final.read_bytes(), final.stat().st_mtime_ns
    state = (out / "state" / "step-000003" / "trainable.safetensors").read_bytes()
    for _ in range(2):  # a job script restarts with --resume latest every time
        again = cli(*args, "--resume", "latest")
        assert again.exit_code == 0, again.output
        assert "nothing to do" in again.output and "already finished at step 3" in again.output
        assert "done:" not in again.output and "diffsynth train:" not in again.output  # no load
    assert final.read_bytes() == before and final.stat().st_mtime_ns == stamp
    assert _states(out) == ["step-000003"]
    assert (out / "state" / "step-000003" / "trainable.safetensors").read_bytes() == state
    assert len(_metrics(out)) == 3


def test_a_final_checkpoint_lost_after_the_last_state_is_written_again_without_training(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = (*train_args, "--output", out, "--max-steps", 3)
    assert cli(*args).exit_code == 0
    (out / "final.safetensors").rename(tmp_path / "first-final.safetensors")  # killed before it
    again = cli(*args, "--resume", "latest")
    assert again.exit_code == 0 and "done: 3 steps" in again.output, again.output
    assert _same_weights(out / "final.safetensors", tmp_path / "first-final.safetensors")
    assert _states(out) == ["step-000003"] and len(_metrics(out)) == 3


# -- 2: --overwrite ---------------------------------------------------------------------------


def test_overwrite_of_an_empty_folder_says_nothing_was_removed(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    first = cli(*train_args, "--output", tmp_path / "new", "--max-steps", 1, "--overwrite")
    assert first.exit_code == 0 and "removed" not in first.output, first.output


def test_overwrite_starts_in_a_clean_folder(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    old = cli(*train_args, "--output", out, "--max-steps", 4, "--save-every-n-steps", 1,
              "--keep-last", 10)  # fmt: skip
    assert old.exit_code == 0 and _states(out)[-1] == "step-000004"
    (out / "notes.txt").write_text("mine")  # not the run's: stays
    new = cli(*train_args, "--output", out, "--max-steps", 2, "--save-every-n-steps", 1,
              "--keep-last", 1, "--seed", 7, "--overwrite")  # fmt: skip
    assert new.exit_code == 0, new.output
    assert "--overwrite: removed the previous run" in new.output
    assert _states(out) == ["step-000002"]  # was: the old step-000004 kept, the new one pruned
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "final.safetensors",
        "step-000002.safetensors",
    ]
    entries = json.loads((out / "checkpoints.json").read_text())
    assert [(e["file"], e["step"]) for e in entries] == [
        ("step-000002.safetensors", 2),
        ("final.safetensors", 2),
    ]
    assert (out / "notes.txt").read_text() == "mine"
    resumed = cli(*train_args, "--output", out, "--max-steps", 2, "--seed", 7, "--resume", "latest")
    assert "already finished at step 2" in resumed.output, resumed.output  # not the old run


def test_overwrite_and_resume_together_are_refused(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    result = cli(*train_args, "--output", tmp_path / "run", "--overwrite", "--resume", "latest")
    _one_error_line(result, "give one of them")


# -- 3: nothing is written before the run starts ----------------------------------------------


def test_refused_or_failed_starts_write_nothing(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert cli(*train_args, "--output", out, "--max-steps", 2).exit_code == 0
    saved = (out / "training_args.json").read_bytes()
    refused = cli(*train_args, "--output", out, "--resume", "latest", "--batch-size", 2)
    _one_error_line(refused, "--batch-size was 1 in that run, 2 now")
    failed = cli(*train_args, "--output", out, "--resume", "latest", "--max-steps", 4,
                 "--sample-prompts", tmp_path / "absent.txt")  # fmt: skip
    _one_error_line(failed, "--sample-prompts")
    assert (out / "training_args.json").read_bytes() == saved

    fresh = tmp_path / "fresh"
    failed = cli(*train_args, "--output", fresh / "run", "--optimizer", "NoSuchOptimizer")
    assert failed.exit_code == 1 and "NoSuchOptimizer" in failed.output, failed.output
    assert not fresh.exists()  # no training_args.json, no lock file, no folders


# -- 4: two runs on one output folder ---------------------------------------------------------


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_LOAD_PLUGINS": "", **extra}
    env.pop("DIFFSYNTH_DEBUG", None)
    return {**env, "DIFFSYNTH_CACHE": str(cache)}


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused_naming_the_first(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out, cache = tmp_path / "run", tmp_path_factory.getbasetemp() / "diffsynth-cache"
    first = subprocess.Popen(
        [sys.executable, str(HERE / "toy_cli.py"), *train_args, "--output", str(out), "--max-steps", "6"],
        env=_env(cache, TOY_STEP_DELAY="0.4"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "logs" / "metrics.csv").exists() and first.poll() is None:
        assert time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.05)
    second = cli(*train_args, "--output", out, "--max-steps", 6, "--resume", "latest")
    _one_error_line(second, f"in use by another diffsynth train (PID {first.pid})")
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "done: 6 steps" in output, output
    assert _states(out) == ["step-000006"] and len(_metrics(out)) == 6
    assert not list(out.glob(".tmp-*")) and not list((out / "state").glob(".tmp-*"))


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from diffsynth_core.cli.run.lock import OutputLock\n"
         "OutputLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    busy = cli(*train_args, "--output", out, "--max-steps", 1)
    _one_error_line(busy, f"PID {holder.pid}")
    holder.kill()  # SIGKILL: no clean-up ran, the lock file is still there
    holder.wait()
    assert (out / ".diffsynth-train.lock").exists()
    result = cli(*train_args, "--output", out, "--max-steps", 1)
    assert result.exit_code == 0 and "done: 1 steps" in result.output, result.output
    assert not (out / ".diffsynth-train.lock").exists()


# -- 5: a resumed run keeps its own settings --------------------------------------------------


def test_resume_keeps_the_run_settings_and_lists_each_override(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    out, unbroken = tmp_path / "run", tmp_path / "unbroken"
    assert cli(*train_args, "--output", unbroken, "--max-steps", 6, "--seed", 3).exit_code == 0
    assert cli(*train_args, "--output", out, "--max-steps", 2, "--seed", 3).exit_code == 0
    resumed = cli("train", "--output", out, "--resume", "latest", "--max-steps", 6)  # nothing else
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed     : settings of {out / 'training_args.json'}" in resumed.output
    assert "override  : max_steps: 2 -> 6 (from the command line)" in resumed.output
    assert _same_weights(out / "final.safetensors", unbroken / "final.safetensors")
    assert {row["lr"] for row in _metrics(out)} == {"0.002"}  # not the default 1e-4
    config = json.loads((out / "training_args.json").read_text())["config"]
    assert (config["learning_rate"], config["max_steps"], config["seed"]) == (0.002, 6, 3)

    changed = cli("train", "--output", out, "--resume", "latest", "--max-steps", 7,
                  "--learning-rate", "1e-3")  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert (
        "learning_rate: 0.002 -> 0.001 (from the command line; the run now differs"
        in changed.output
    )
    assert [row["lr"] for row in _metrics(out)][-2:] == ["0.002", "0.001"]
    for flags, message in (
        (("--seed", 4), "--seed was 3 in that run, 4 now"),
        (("--lora-rank", 8), "--lora-rank was 4 in that run, 8 now"),
    ):
        refused = cli("train", "--output", out, "--resume", "latest", "--max-steps", 9, *flags)
        _one_error_line(refused, message)
    assert len(_metrics(out)) == 7


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


# -- 13 (part): output folders that cannot be used, a full disk -------------------------------


def test_an_unusable_output_is_one_line_before_anything_loads(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    for output, message in ((file, "is a file"), (file / "run", "which is a file")):
        result = cli(*train_args, "--output", output)
        _one_error_line(result, message)
        assert "diffsynth train:" not in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_is_one_line(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        _one_error_line(cli(*train_args, "--output", locked / "run"), "cannot be written")
    finally:
        locked.chmod(0o755)


def test_a_full_disk_keeps_what_was_saved_and_resume_continues(
    cli: Any, train_args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, unbroken = tmp_path / "run", tmp_path / "unbroken"
    args = (*train_args, "--max-steps", 6, "--save-every-n-steps", 2, "--keep-last", 3)
    assert cli(*args, "--output", unbroken).exit_code == 0
    real_save, calls = torch.save, []

    def fills_the_disk(obj: Any, path: Any, *rest: Any, **kw: Any) -> None:
        calls.append(path)
        if len(calls) == 3:  # the state of step 4 (2 files a state)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(obj, path, *rest, **kw)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    full = cli(*args, "--output", out)
    monkeypatch.undo()
    _one_error_line(full, "disk full while writing")
    assert "state/step-000002" in full.output and "--resume latest" in full.output
    assert _states(out) == ["step-000002"]  # intact; the half-written one removed
    assert {"step-000002.safetensors", "step-000004.safetensors"} <= {p.name for p in out.iterdir()}
    resumed = cli(*args, "--output", out, "--resume", "latest")
    assert resumed.exit_code == 0, resumed.output
    assert _same_weights(out / "final.safetensors", unbroken / "final.safetensors")


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


@pytest.mark.slow
def test_a_two_process_run_prints_one_done_line_with_the_real_checkpoint(
    train_args: tuple[str, ...], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out, cache = tmp_path / "run", tmp_path_factory.getbasetemp() / "diffsynth-cache"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29519"]  # fmt: skip
    done = subprocess.run(
        [*launch, str(HERE / "toy_cli.py"), *train_args, "--output", str(out), "--max-steps", "2"],
        env=_env(cache, ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("done:")]
    assert lines == [f"done: 2 steps, checkpoint {out / 'final.safetensors'}"], done.stdout
