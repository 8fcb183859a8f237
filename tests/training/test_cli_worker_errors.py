"""``diffsynth train --on-bad-sample error --num-workers 1`` in a real process: the run ends
with the bad sample's own one line, as with ``--num-workers 0``, not a worker traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def _train(
    image_folder: Path, out: Path, cache: Path, workers: int
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DIFFSYNTH_LOAD_PLUGINS": "",
        "DIFFSYNTH_CACHE": str(cache),
    }
    env.pop("DIFFSYNTH_DEBUG", None)
    command = [sys.executable, str(HERE / "toy_cli.py"), "train", "--model", "toy", "--preset", "tiny",
               "--dataset", str(image_folder), "--output", str(out), "--max-steps", "8",
               "--on-bad-sample", "error", "--num-workers", str(workers)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def test_a_bad_sample_in_a_worker_stops_the_run_with_its_own_line(
    image_folder: Path, tmp_path: Path
) -> None:
    (image_folder / "image_2.png").unlink()
    expected = "error: row 2, column 'image' (image_2.png): missing: file does not exist"
    for workers in (0, 1):
        done = _train(image_folder, tmp_path / f"run{workers}", tmp_path / "cache", workers)
        output = done.stdout + done.stderr
        assert done.returncode == 1, output[-3000:]
        assert done.stderr.rstrip().splitlines()[-1] == expected, output[-3000:]
        assert "Traceback" not in output and "Caught" not in output
