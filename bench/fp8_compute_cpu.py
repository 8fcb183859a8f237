"""Loss curves of a LoRA on the tiny Qwen-Image preset at base precision bf16, fp8 (torchao's
weight-only) and fp8-compute (fp8 matmuls, ``diffsynth_core/training/fp8_compute.py``) (CPU).

    python bench/fp8_compute_cpu.py [--steps 100] [--write]

Each run goes through the CLI's own build (``prepare`` + ``train``, as ``diffsynth train``):
the tiny Qwen-Image model built here, 4 images of 32x32, ``--mixed-precision bf16`` (which
``--base-precision bf16`` needs; the same for all three), LoRA rank 4 at lr 1e-3, cached
features, the same seed, so the three runs draw the same timesteps and noise and differ only
in the base's precision. Printed: the loss every 10th step, the means over the first and the
last 20 steps, and how far each run's LoRA is from the bf16 run's (relative Frobenius
difference: over all weights, and the largest of one tensor). The CPU's speed says nothing of a GPU's: no time is
reported. Results go to ``bench/results/fp8_compute_cpu.md`` with ``--write``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PRECISIONS = ("bf16", "fp8", "fp8-compute")


def run(model: Path, data: Path, output: Path, precision: str, steps: int) -> Path:
    from accelerate.state import AcceleratorState, GradientState

    from diffsynth_core.cli.run.build import prepare, train
    from diffsynth_core.plugins import reset_plugin_manager

    cli = {
        "model": "qwen-image", "model_path": str(model), "dataset": str(data),
        "output": str(output), "max_steps": steps, "height": 32, "width": 32, "lora_rank": 4,
        "learning_rate": 1e-3, "mixed_precision": "bf16", "base_precision": precision,
        "cache_features": True,
    }  # fmt: skip
    train(prepare(cli, None, []), echo=lambda line: None)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    reset_plugin_manager(None)
    return output


def losses(output: Path) -> list[float]:
    with (output / "logs" / "metrics.csv").open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def lora_difference(got: Path, reference: Path) -> tuple[float, float]:
    """(over all weights, largest single tensor) relative difference of two LoRA files."""
    from safetensors.torch import load_file

    a, b = (load_file(str(p / "final.safetensors")) for p in (got, reference))
    trained = [k for k in sorted(b) if b[k].abs().max() > 0]  # B of unreached layers stays 0
    whole = torch.cat([a[k].flatten() for k in trained]) - torch.cat(
        [b[k].flatten() for k in trained]
    )
    overall = float(whole.norm() / torch.cat([b[k].flatten() for k in trained]).norm())
    largest = max(float((a[k] - b[k]).norm() / b[k].norm()) for k in trained)
    return overall, largest


def report(
    curves: dict[str, list[float]], diffs: dict[str, tuple[float, float]], steps: int
) -> str:
    names = list(curves)
    lines = ["| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for step in [1, *range(10, steps + 1, 10)]:
        lines.append(
            f"| {step} | " + " | ".join(f"{curves[n][step - 1]:.4f}" for n in names) + " |"
        )
    tail = min(20, steps)
    for label, part in (("first", slice(0, tail)), ("last", slice(-tail, None))):
        means = {n: sum(curves[n][part]) / tail for n in names}
        lines.append(
            f"| mean of the {label} {tail} | " + " | ".join(f"{means[n]:.4f}" for n in names) + " |"
        )
    gap = {
        n: max(abs(x - y) for x, y in zip(curves[n], curves["bf16"], strict=True)) for n in names
    }
    lines.append(
        "| max abs. difference from bf16 | " + " | ".join(f"{gap[n]:.2e}" for n in names) + " |"
    )
    lines += ["", "| LoRA vs the bf16 run's | relative difference, all weights | largest, one tensor |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| {n} | {diffs[n][0]:.3f} | {diffs[n][1]:.3f} |" for n in names if n != "bf16"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)  # the tiny model: one thread is faster and reproducible

    from diffsynth_core.testing import make_image_dataset
    from diffsynth_qwen_image.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = Path(build_tiny(root / "model"))
        data = Path(make_image_dataset(root / "data", 4, 32))
        outputs = {p: run(model, data, root / p, p, args.steps) for p in PRECISIONS}
        curves = {p: losses(o) for p, o in outputs.items()}
        diffs = {p: lora_difference(o, outputs["bf16"]) for p, o in outputs.items()}
    table = report(curves, diffs, args.steps)
    print(table)
    if args.write:
        header = (
            "# fp8 compute: loss curves against bf16 (CPU)\n\n"
            f"`python bench/fp8_compute_cpu.py --steps {args.steps} --write`: the tiny Qwen-Image "
            "preset, LoRA rank 4 at lr 1e-3, 4 images of 32x32, cached features, "
            "`--mixed-precision bf16`, the same seed for each `--base-precision`; "
            f"torch {torch.__version__}, {platform.machine()}, 1 thread.\n\n"
        )
        footer = (
            "\n\nGPU speed: not yet measured (no GPU was lent to this task). On the CPU "
            "`torch._scaled_mm` is a reference kernel, so its times say nothing of an H100's.\n"
        )
        path = REPO / "bench" / "results" / "fp8_compute_cpu.md"
        path.write_text(header + table + footer)
        print(f"written: {path}")


if __name__ == "__main__":
    main()
