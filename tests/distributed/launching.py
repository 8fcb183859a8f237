"""Starting child runs: ``accelerate launch`` on CPU processes over gloo, one thread each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    """The test's environment for a child run: one thread (bit-stable sums), no debug mode."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", **extra}
    base.pop("DIFFSYNTH_DEBUG", None)
    return base


def launch_command(processes: int, *args: str) -> list[str]:
    """``accelerate launch`` of ``args`` (a script and its arguments, or ``-m module ...``)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
        str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), *args,
    ]  # fmt: skip


def run(command: list[str], timeout: float = 400, **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done
