"""What the GPU benchmarks share: a variant table, step timing, the results file.

Timing: on CUDA each timed step is bracketed by CUDA events and the host synchronises once,
after the last step, so a step's time includes any gap in which the GPU waited for the host
(what a per-step ``float(loss)`` causes) and the benchmark itself adds no synchronisation. On
the CPU ``time.perf_counter`` per step. The reported figure is the median over the timed
steps, after the warm-up steps (which include compilation).

Rows are printed and appended to ``--out`` as each variant finishes, so a run cut short by a
time limit keeps what it measured.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = (
    "| variant | checkpointing | batch | s/step | samples/s | peak GiB | TFLOP/s | MFU |\n"
    "|---|---|---|---|---|---|---|---|"
)


@dataclass(frozen=True)
class Variant:
    """One measured configuration of a training step."""

    name: str
    path: str  # "ours" (diffsynth's training path) or "bare" (diffusers + peft, no diffsynth)
    checkpointing: str = "full"  # "full", "selective" or "off"
    compile: bool = False  # regional torch.compile of the repeated blocks
    attention: str = "sdpa"
    precision: str | None = None  # --base-precision of the frozen base (None: as loaded, bf16)
    batch: int = 1
    host_read: bool = False  # read loss and gradient norm on the host every step (the old guard)

    def label(self) -> str:
        parts = [self.name]
        if self.compile:
            parts.append("compile")
        if self.attention != "sdpa":
            parts.append(self.attention)
        if self.precision:
            parts.append(self.precision)
        if self.host_read:
            parts.append("host read per step")
        return ", ".join(parts)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: Any) -> None:
    """Give the last variant's memory back before the next one measures its peak."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(step: Callable[[], None], warmup: int, steps: int, device: Any) -> tuple[float, float | None]:
    """(median s/step over ``steps`` timed steps, peak GiB or None off CUDA)."""
    import torch

    for _ in range(warmup):
        step()
    sync(device)
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return statistics.median(times), None
    torch.cuda.reset_peak_memory_stats(device)
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for index in range(steps):
        step()
        events[index + 1].record()
    torch.cuda.synchronize(device)
    times = [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(steps)]
    return statistics.median(times), torch.cuda.max_memory_allocated(device) / 2**30


def row(
    variant: Variant, seconds: float, peak: float | None, flops: float, peak_tflops: float, cuda: bool
) -> str:
    """One table row; ``flops`` is the model work of one step (the whole batch)."""
    tflops = flops / seconds / 1e12
    mfu = f"{tflops / peak_tflops:.1%}" if cuda else "n/a"
    shown = f"{peak:.1f}" if peak is not None else "n/a (CPU)"
    return (
        f"| {variant.label()} | {variant.checkpointing} | {variant.batch} | {seconds:.4f} | "
        f"{variant.batch / seconds:.3g} | {shown} | {tflops:.3g} | {mfu} |"
    )


def skipped(variant: Variant, reason: str) -> str:
    return f"| {variant.label()} | {variant.checkpointing} | {variant.batch} | skipped: {reason} | | | | |"


class Results:
    """Prints each line and appends it to ``out`` (when given) at once."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("", encoding="utf-8")

    def line(self, text: str) -> None:
        print(text, flush=True)
        if self.out is not None:
            with self.out.open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")


def selected(variants: tuple[Variant, ...], only: str | None) -> list[Variant]:
    """The variants whose label contains one of the comma-separated words of ``only``."""
    if not only:
        return list(variants)
    words = [w.strip() for w in only.split(",") if w.strip()]
    return [v for v in variants if any(w in f"{v.label()} {v.checkpointing} b{v.batch}" for w in words)]



def bare_lora(dit: Any, targets: str, variant: Variant, backend: str) -> tuple[Any, Any, Any]:
    """The bare loop's setup: peft LoRA rank 32 on ``targets`` of a frozen diffusers model,
    checkpointing and regional compilation as ``variant`` says, fp32 LoRA weights and fused
    AdamW; (model, LoRA parameters, optimizer)."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    dit = inject_adapter_in_model(LoraConfig(r=32, lora_alpha=32, target_modules=targets.split(",")), dit)
    if variant.checkpointing != "off":
        dit.enable_gradient_checkpointing()
    if variant.compile:
        dit.compile_repeated_blocks(backend=backend)
    params = [p.requires_grad_(True) for n, p in dit.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
    return dit, params, torch.optim.AdamW(params, lr=1e-4, fused=True)


def add_common_arguments(parser: Any, steps: int, warmup: int) -> None:
    """The options both benchmarks take (device, dtype, timing, selection, output)."""
    import os

    parser.add_argument("--device", default=os.environ.get("DEVICE", "cuda"))
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--only", default=None, help="comma list of words; variants whose label has one")
    parser.add_argument("--compile-backend", default="inductor", help="aot_eager for a quick CPU check")
    parser.add_argument("--out", type=Path, default=None, help="append the table here as it grows")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the matrix rate MFU divides by")


def finish_arguments(args: Any) -> Any:
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    return args
