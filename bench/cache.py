"""Split training on the CPU: tiny families trained with and without a disk cache.

    python bench/cache.py [--families qwen-image,wan-vace] [--steps 12] [--threads 1]

Per family, three fresh ``diffsynth`` processes on the bundled example data (the tiny preset):

* ``cache``: ``diffsynth cache`` -- its wall time is the cache build time (one process);
* ``plain``: ``diffsynth train`` without the cache (every unit every step, every model loaded);
* ``cached``: ``diffsynth train --cache`` (the text encoder and VAE never loaded).

steps/s is the median of ``logs/metrics.csv``'s per-step rate (batch 1: samples/s = steps/s;
step 1 excluded); peak RSS is each process's own (``wait4``). Both training runs also report
whether their losses are equal (they must be: the cache changes nothing but the work done).
Results go to ``bench/results/cache.md``. The tiny models are small: their text encoder and
VAE weigh little, so the RSS difference here is mostly the libraries' and the activations';
docs/memory.md has the real-size figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {
    "qwen-image": (REPO / "examples" / "qwen_image" / "data", ["--height", "64", "--width", "64"]),
    "wan-vace": (REPO / "examples" / "wan_vace" / "data", ["--height", "32", "--width", "32", "--num-frames", "5"]),
}  # fmt: skip


def run_child(args: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``diffsynth ARGS``; its wall time and its own peak RSS (MB, from wait4)."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "diffsynth_core.cli.main", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"diffsynth {' '.join(args[:3])} failed:\n{log.read_text()[-3000:]}")
    return {"seconds": time.monotonic() - start, "rss_mb": usage.ru_maxrss / 1024}


def metrics(run: Path) -> tuple[float, list[str]]:
    rows = [r.split(",") for r in (run / "logs" / "metrics.csv").read_text().splitlines()[1:]]
    return statistics.median(float(r[-1]) for r in rows[1:]), [r[2] for r in rows]


def measure(family: str, steps: int, env: dict[str, str], work: Path) -> dict[str, object]:
    data, size = FAMILIES[family]
    common = ["--model", family, "--preset", "tiny", "--dataset", str(data), *size]
    cache = work / f"{family}-cache"
    built = run_child(
        ["cache", *common, "--output", str(cache), "--no-progress"], env, work / "cache.log"
    )
    train = ["train", *common, "--max-steps", str(steps)]
    plain = run_child([*train, "--output", str(work / f"{family}-plain")], env, work / "plain.log")
    cached = run_child(
        [*train, "--cache", str(cache), "--output", str(work / f"{family}-cached")],
        env,
        work / "cached.log",
    )
    plain_rate, plain_losses = metrics(work / f"{family}-plain")
    cached_rate, cached_losses = metrics(work / f"{family}-cached")
    return {
        "family": family, "build_s": built["seconds"], "build_rss": built["rss_mb"],
        "plain_rate": plain_rate, "plain_rss": plain["rss_mb"], "cached_rate": cached_rate,
        "cached_rss": cached["rss_mb"], "same_losses": plain_losses == cached_losses,
    }  # fmt: skip


def _build_tiny(family: str, folder: str) -> None:
    from diffsynth_core.cli.run.presets import tiny_folder
    from diffsynth_core.plugins import get_plugin_manager

    os.environ["DIFFSYNTH_CACHE"] = folder
    tiny_folder(get_plugin_manager().get_family(family))


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| family | cache build (s) | build peak RSS (MB) | steps/s without cache | with cache | speed-up | peak RSS without (MB) | with (MB) | same losses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['build_s']:.1f} | {r['build_rss']:.0f} | {r['plain_rate']:.2f} | "
            f"{r['cached_rate']:.2f} | {r['cached_rate'] / r['plain_rate']:.1f}x | {r['plain_rss']:.0f} | "  # type: ignore[operator]
            f"{r['cached_rss']:.0f} | {'yes' if r['same_losses'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="qwen-image,wan-vace")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--threads", default="1", help="torch threads in every run (OMP_NUM_THREADS)"
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    load, rows = os.getloadavg()[0], []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": args.threads, "TQDM_DISABLE": "1",
               "DIFFSYNTH_CACHE": str(Path(tmp) / "models")}  # fmt: skip
        for family in args.families.split(","):
            work = Path(tmp) / family
            work.mkdir()
            _build_tiny(family, env["DIFFSYNTH_CACHE"])  # not part of the cache build time
            rows.append(measure(family, args.steps, env, work))
            print(table(rows[-1:]), flush=True)
    import torch

    report = (
        "# Split training on the CPU: with and without `diffsynth cache`\n\n"
        f"`python bench/cache.py --families {args.families} --steps {args.steps} --threads {args.threads}`, "
        f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {os.cpu_count()} CPU cores "
        f"({platform.machine()}), load average {load:.1f} at start (other jobs shared the cores).\n\n"
        + table(rows)
        + "\nThe tiny presets on the bundled example data (Qwen-Image at 64x64; Wan VACE at 32x32, "
        "5 frames), LoRA on the DiT, fp32, batch 1. Cache build: the whole `diffsynth cache` "
        "process (start-up, model load, encoding every row once). steps/s: median per-step rate "
        "of the run's metrics log, step 1 excluded. Peak RSS: each process's own. The cached run "
        "loads no text encoder and no VAE and runs neither per step; its losses equal the plain "
        "run's. Real-size memory: docs/memory.md.\n"
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "cache.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
