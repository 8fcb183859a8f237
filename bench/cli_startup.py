"""How long ``diffsynth --help`` takes, as a user feels it (a new process each run).

Runs each command N times via subprocess and prints the median, min and max wall time as a
markdown table; the target for ``diffsynth --help`` is under 1 s. ``python -c pass`` and a bare
``import diffsynth_core`` are measured beside it to show where the time goes.

    python bench/cli_startup.py [--runs 15] [--write bench/results/cli_startup.md]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 1.0


def commands() -> dict[str, list[str]]:
    """What to time: the interpreter alone, the core's import, and the real script."""
    script = shutil.which("diffsynth", path=str(Path(sys.executable).parent)) or "diffsynth"
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import diffsynth_core'": [sys.executable, "-c", "import diffsynth_core"],
        "diffsynth --help": [script, "--help"],
        "diffsynth plugins": [script, "plugins"],
    }


def time_runs(argv: list[str], runs: int) -> list[float]:
    """Wall time of ``runs`` runs after one warm-up (which fills the OS file cache)."""
    subprocess.run(argv, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def plugins_loaded() -> str:
    from diffsynth_core.plugins import get_plugin_manager

    return ", ".join(get_plugin_manager().plugins)


def report(runs: int) -> str:
    """The markdown table of every command's timings."""
    lines = [
        "# `diffsynth --help` startup time",
        "",
        f"{runs} runs each after one warm-up; Python {platform.python_version()} on "
        f"{platform.machine()}, {platform.system()}; target for `--help`: under {TARGET_S:.0f} s.",
        f"Plugins loaded: {plugins_loaded()}.",
        "",
        "| command | median (s) | min (s) | max (s) |",
        "|---|---|---|---|",
    ]
    for name, argv in commands().items():
        times = time_runs(argv, runs)
        lines.append(
            f"| `{name}` | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--write", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    table = report(args.runs)
    print(table, end="")
    if args.write:
        args.write.write_text(table)


if __name__ == "__main__":
    main()
