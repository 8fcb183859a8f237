"""Wan VACE tiny preset on the CPU: training throughput and peak memory per clip size.

    python bench/vace_cpu.py [--frames 9,17] [--sizes 64,128] [--threads 1,2] [--steps 8]

Each configuration runs in a fresh child process (so its peak RSS is its own): the tiny
preset, LoRA rank 32 on the family's default targets of ``dit``, gradient checkpointing, AdamW,
fp32, batch 1, through the core's ``PipelineTrainingModule`` + ``FlowMatchSFTLoss`` (the
``diffsynth train`` path minus data loading). The sample is a VACE control task: a clip of a
moving square with a control video and a mask of the same size. Reported: best and median step time
over ``--steps`` steps after one warm-up, training frames/s (frames per clip / best step time:
on a shared machine the fastest step is the least disturbed one),
the part of a step spent in the units (VAE encodes of clip, control and mask halves, UMT5),
and the child's peak RSS. Results go to ``bench/results/vace_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "vace_cpu.md"


def clip(frames: int, size: int, seed: int) -> list:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        array = np.zeros((size, size, 3), dtype=np.uint8) + rng.integers(0, 40, 3, dtype=np.uint8)
        x = (size // 16) * (1 + i % 8)
        array[size // 3 : size // 3 + size // 4, x : x + size // 4] = 230
        out.append(Image.fromarray(array))
    return out


def worker(tiny: Path, frames: int, size: int, steps: int, threads: int) -> dict[str, float]:
    """One configuration in this process; returns its timings."""
    import torch

    torch.set_num_threads(threads)
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.training.losses import FlowMatchSFTLoss
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_vace.family import LORA_TARGETS

    pipe = load_pipeline("wan-vace", model_path=str(tiny))
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=32
    )
    module = PipelineTrainingModule(pipe, FlowMatchSFTLoss, {"use_gradient_checkpointing": True})
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    data = {"prompt": "a white square moves right", "video": clip(frames, size, 0)}
    data["vace_video"], data["vace_video_mask"] = clip(frames, size, 1), clip(frames, size, 2)
    step_times, unit_times = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        module(data).backward()
        optimizer.step()
        step_times.append(time.perf_counter() - t0)
        with torch.no_grad():
            t0 = time.perf_counter()
            shared, posi, nega = pipe.training_inputs(data)
            pipe.run_units({"cfg_scale": 1, **shared}, posi, nega)
            unit_times.append(time.perf_counter() - t0)
    steps_only = step_times[1:]
    return {
        "step_s": min(steps_only),
        "median_s": statistics.median(steps_only),
        "units_s": min(unit_times[1:]),
    }


def run_child(tiny: Path, frames: int, size: int, steps: int, threads: int) -> dict[str, float]:
    """The worker in a fresh process; its result plus its own peak RSS (from wait4)."""
    args = [
        sys.executable,
        __file__,
        "--worker",
        str(tiny),
        str(frames),
        str(size),
        str(steps),
        str(threads),
    ]
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"worker {frames}x{size} failed:\n{text[-2000:]}")
    result = json.loads(text.strip().splitlines()[-1])
    return {**result, "rss_mb": usage.ru_maxrss / 1024}


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| frames | size | threads | best step (s) | median step (s) | training frames/s | units share | peak RSS (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {r['size']} | {r['threads']} | {r['step_s']:.3f} | {r['median_s']:.3f} "
            f"| {r['frames'] / r['step_s']:.1f} "
            f"| {r['units_s'] / r['step_s']:.0%} | {r['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def report(rows: list[dict[str, float]], load: tuple[float, float, float]) -> str:
    import torch

    return (
        "# Wan VACE tiny preset, CPU training throughput\n\n"
        f"`python bench/vace_cpu.py` on {platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__}; "
        f"load average before the run {load[0]:.1f} (a shared machine: compare rows of one run, not runs).\n"
        "LoRA rank 32 on `dit` (the family defaults), gradient checkpointing, AdamW, fp32, batch 1, a VACE "
        'control task (clip + control video + mask). "units share": the part of a step spent before the DiT '
        "(three VAE encodes and UMT5), measured separately without gradients. Frames/s use the best step "
        "(the least disturbed on a shared machine).\n\n"
        f"{table(rows)}\n\n"
        "Reading: the tiny DiT is cheap, so the VAE (three encodes of the clip per step) is most of a "
        "step; the units share is measured apart from the step and can read above 100 % when the "
        "machine was busier then. With `--cache-features` the VAE and UMT5 run once per sample, "
        "leaving the DiT's share.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="9,17")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--worker", nargs=5)
    args = parser.parse_args()
    if args.worker:
        tiny, frames, size, steps, threads = args.worker
        print(json.dumps(worker(Path(tiny), int(frames), int(size), int(steps), int(threads))))
        return
    from diffsynth_vace.tiny import build_tiny

    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny")
        for threads in (int(t) for t in args.threads.split(",")):
            for frames in (int(f) for f in args.frames.split(",")):
                for size in (int(s) for s in args.sizes.split(",")):
                    result = run_child(tiny, frames, size, args.steps, threads)
                    rows.append({"frames": frames, "size": size, "threads": threads, **result})
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = report(rows, load)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
