"""Helpers of the author-kit and new-plugin tests: a pytest run in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KIT = "diffsynth_core.testing.pytest_plugin"


def kit_flags() -> list[str]:
    """``-p`` the kit unless diffsynth-core is installed with its pytest11 entry point (then
    pytest loads it already, and loading it twice is an error)."""
    installed = any(ep.value == KIT for ep in metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", KIT]


def run_pytest(
    folder: Path,
    *args: str,
    pythonpath: Path | None = None,
    kit: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``python -m pytest FOLDER`` in a fresh process (cwd: FOLDER's parent, so the source
    folder is not what gets imported), ``pythonpath`` then this checkout importable, and the kit
    loaded (``kit=False``: only if an installed pytest11 entry point loads it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    paths = [str(p) for p in (pythonpath, ROOT) if p] + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += kit_flags() if kit else []
    return subprocess.run(
        [*command, *args, str(folder)], capture_output=True, text=True, env=env, cwd=folder.parent,
        timeout=timeout,
    )  # fmt: skip
