"""The memory estimate against real tensors on the CPU, and its tables at real size.

``validate``: for real-width configs of few blocks (Qwen-Image's 3072-wide blocks, Wan2.1-
VACE-1.3B's 1536-wide ones), the estimate -- fake traces of one and two units, scaled to
three -- against one real step of the three-unit model, its every tensor counted by the
same MemTracker (real storage this time, on the CPU). Target: within 15%.

``tables``: the estimate at real size for docs/memory.md (Qwen-Image LoRA r32 at 1024x1024,
Wan2.1-VACE-14B LoRA at 832x480x81 frames), every mode with and without cache and
checkpointing.

    python bench/estimate_cpu.py [--write bench/results/estimate_cpu.md] [--skip-validate]
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from typing import Any

import torch

from diffsynth_core.memory.budget import gib
from diffsynth_core.memory.estimate import Estimator, MemorySettings
from diffsynth_core.memory.spec import RealSize, Shape
from diffsynth_core.memory.validate import estimated_peak, measured_peak

MODES = [("bf16", 0), ("fp8", 0), ("fp8", "swap"), ("int8", "swap")]


def _short_text(spec: RealSize, tokens: int, key: str = "encoder_hidden_states") -> RealSize:
    """``spec`` with ``tokens`` text tokens (a real step of 512 costs minutes on a CPU)."""

    def inputs(model: Any, shape: Shape, dtype: Any) -> dict[str, Any]:
        values = spec.inputs(model, shape, dtype)
        values[key] = values[key][:, :tokens]
        return values

    return replace(spec, inputs=inputs, units=3)


def validation_configs() -> list[tuple[str, Estimator, MemorySettings]]:
    from diffsynth_qwen_image.family import LORA_TARGETS as QWEN_TARGETS
    from diffsynth_qwen_image.real_size import REAL_SIZE as QWEN
    from diffsynth_vace.family import LORA_TARGETS as WAN_TARGETS
    from diffsynth_vace.real_size import REAL_SIZE_1_3B as WAN

    qwen = Estimator(_short_text(QWEN, 16), ("transformer_blocks",))
    wan = Estimator(_short_text(WAN, 64), ("blocks", "vace_blocks"))
    q = MemorySettings(Shape(1, 128, 128), lora_target_modules=QWEN_TARGETS, cache=True)
    w = MemorySettings(Shape(1, 128, 128, 5), lora_target_modules=WAN_TARGETS, cache=True)
    return [
        ("Qwen-Image width 3072, 3 blocks, LoRA r32, 128x128 + 16 text tokens, checkpointing", qwen, q),
        ("Qwen-Image width 3072, 3 blocks, LoRA r32, 128x128 + 16 text tokens, no checkpointing", qwen, q.but(gradient_checkpointing=False)),
        ("Wan2.1-VACE-1.3B width 1536, 3 units (6+3 blocks), LoRA r32, 128x128x5 + 64 text tokens, checkpointing", wan, w),
        ("Wan2.1-VACE-1.3B width 1536, 3 units (6+3 blocks), LoRA r32, 128x128x5 + 64 text tokens, no checkpointing", wan, w.but(gradient_checkpointing=False)),
    ]  # fmt: skip


def validate() -> list[str]:
    lines = [
        "| config | measured (real tensors) | estimated (fake 1+2 units, scaled) | error |",
        "|---|---|---|---|",
    ]
    for name, estimator, settings in validation_configs():
        estimated = estimated_peak(estimator, settings, 3)
        measured = measured_peak(estimator, settings, 3)
        error = (estimated - measured) / measured
        lines.append(f"| {name} | {gib(measured)} | {gib(estimated)} | {error:+.1%} |")
        print(lines[-1], flush=True)
    return lines


def table(title: str, estimator: Estimator, base: MemorySettings) -> list[str]:
    swap = estimator.spec.num_blocks // 2
    lines = [f"### {title}", "", "| mode | cache | checkpointing | base weights | encoders | trainable | activations | temporaries | peak |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for precision, swapped in MODES:
        for cache in (False, True):
            for ckpt in (True, False):
                s = base.but(
                    base_precision=precision,
                    blocks_to_swap=swap if swapped else 0,
                    cache=cache,
                    gradient_checkpointing=ckpt,
                )
                e = estimator.estimate(s)
                mode = precision + (f" + swap {swap}" if swapped else "")
                parts = " | ".join(gib(v) for v in e.categories().values())
                lines.append(
                    f"| {mode} | {'yes' if cache else 'no'} | {'on' if ckpt else 'off'} | {parts} | **{gib(e.peak)}** |"
                )
    return lines + [""]


def tables() -> list[str]:
    from diffsynth_qwen_image.family import LORA_TARGETS as QWEN_TARGETS
    from diffsynth_qwen_image.real_size import REAL_SIZE as QWEN
    from diffsynth_vace.family import LORA_TARGETS as WAN_TARGETS
    from diffsynth_vace.real_size import REAL_SIZE_14B as VACE

    start = time.perf_counter()
    qwen = table("Qwen-Image, LoRA rank 32 (family targets), 1024x1024, batch 1", Estimator(QWEN, ("transformer_blocks",)),
                 MemorySettings(Shape(1, 1024, 1024), lora_target_modules=QWEN_TARGETS))  # fmt: skip
    vace = table("Wan2.1-VACE-14B, LoRA rank 32 (family targets), 832x480x81 frames, batch 1", Estimator(VACE, ("blocks", "vace_blocks")),
                 MemorySettings(Shape(1, 480, 832, 81), lora_target_modules=WAN_TARGETS))  # fmt: skip
    return [*qwen, *vace, f"(tables computed in {time.perf_counter() - start:.0f} s)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", default=None)
    parser.add_argument("--skip-validate", action="store_true")
    parser.add_argument("--skip-tables", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    head = [
        f"# Memory estimate on CPU ({platform.processor() or platform.machine()}, torch {torch.__version__})",
        "",
    ]
    body = (
        []
        if args.skip_validate
        else ["## Estimate vs measured (real tensors, CPU)", "", *validate(), ""]
    )
    if not args.skip_tables:
        body += ["## At real size (the estimate; flash attention counted, as on a GPU)", "", *tables()]
    text = "\n".join(head + body) + "\n"
    print(text)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
