"""Per-rank memory of full training, DDP vs FSDP2, with 1 and 2 CPU processes (gloo).

A real-width Qwen-Image DiT (diffusers' QwenImageTransformer2DModel, width 3072, 24 heads,
text width 3584) with few layers trains full with AdamW for ``--steps`` steps (default 1), through
``diffsynth_core.training.distributed.make_accelerator`` (``--distributed ddp`` / ``fsdp``:
accelerate's engines, FSDP wrapping the transformer blocks). Every rank reports the bytes of
the tensors it holds -- its parameters (local shards under FSDP), gradients and AdamW states --
and its peak resident memory. Sharding over 2 processes must halve the first three.

    python bench/sharded_cpu.py                     # 2 layers in bf16: about 15 GB of RAM at peak
    python bench/sharded_cpu.py --layers 4 --dtype fp32 --out bench/results/sharded_cpu.md

Not a test (minutes of CPU time and many GB of memory); the results are committed in
bench/results/sharded_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3
RUNS = [("single", 1), ("ddp", 2), ("fsdp", 2)]  # one process: DDP and FSDP have nothing to split


def _tensor_bytes(tensor: Any) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return int(local.numel() * local.element_size())


def _measure(model: Any, optimizer: Any) -> dict[str, int]:
    params = sum(_tensor_bytes(p) for p in model.parameters())
    grads = sum(_tensor_bytes(p.grad) for p in model.parameters() if p.grad is not None)
    states = sum(
        _tensor_bytes(v)
        for state in optimizer.state.values()
        for v in state.values()
        if hasattr(v, "numel") and v.dim() > 0
    )
    return {"params": params, "grads": grads, "optimizer": states}


def worker(mode: str, layers: int, dtype_name: str, steps: int, report: Path) -> None:
    """One rank: build, prepare, AdamW steps; write this rank's numbers to ``report``."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    from diffsynth_core.training.distributed import make_accelerator

    torch.manual_seed(0)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    accelerator = make_accelerator("fsdp" if mode == "fsdp" else "ddp", "no")
    model = QwenImageTransformer2DModel(num_layers=layers).to(dtype)
    model.train()
    count = sum(p.numel() for p in model.parameters())
    if mode == "fsdp":  # diffsynth train fills this in from ModelFamily.blocks
        accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap = ["QwenImageTransformerBlock"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    # 4 image tokens, 2 text tokens: activations stay negligible next to the weights, and CPU
    # bf16 matrix products with few rows (the weight gradients) stay bearable
    h = w = 2
    inputs = {
        "hidden_states": torch.randn(1, h * w, 64, dtype=dtype),
        "encoder_hidden_states": torch.randn(1, 2, 3584, dtype=dtype),
        "encoder_hidden_states_mask": torch.ones(1, 2, dtype=torch.bool),
        "timestep": torch.tensor([0.5], dtype=dtype),
        "img_shapes": [(1, h, w)],
        "return_dict": False,
    }
    numbers: dict[str, int] = {}
    for _ in range(steps):
        loss = model(**inputs)[0].float().pow(2).mean()
        accelerator.backward(loss)
        optimizer.step()
        numbers = _measure(model, optimizer)  # gradients still held: the step's peak set
        optimizer.zero_grad(set_to_none=True)
    numbers["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    numbers["parameters_total"] = count
    report.with_name(f"{report.name}.rank{accelerator.process_index}").write_text(json.dumps(numbers))
    accelerator.wait_for_everyone()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(mode: str, processes: int, args: argparse.Namespace, report: Path) -> list[dict[str, int]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT)}
    worker_args = [__file__, "--worker", mode, "--layers", str(args.layers), "--dtype", args.dtype,
                   "--steps", str(args.steps), "--report", str(report)]  # fmt: skip
    if processes == 1:
        command = [sys.executable, *worker_args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_port()), *worker_args]  # fmt: skip
    subprocess.run(command, env=env, check=True)
    return [json.loads(report.with_name(f"{report.name}.rank{r}").read_text()) for r in range(processes)]


def _table(results: dict[str, list[dict[str, int]]], args: argparse.Namespace, seconds: float) -> str:
    base = results["single"][0]
    lines = [
        "# Per-rank memory of full training: DDP vs FSDP2 on CPU processes",
        "",
        f"`python bench/sharded_cpu.py --layers {args.layers} --dtype {args.dtype} --steps {args.steps}`: diffusers' "
        f"QwenImageTransformer2DModel at real width (3072, 24 heads x 128, text width 3584) with "
        f"{args.layers} layers = {base['parameters_total'] / 1e6:.0f} M parameters in {args.dtype}, full "
        f"training with torch AdamW, {args.steps} step(s), 4 image + 2 text tokens, processes over gloo "
        f"(`ACCELERATE_USE_CPU=1`), one thread each. {seconds:.0f} s in all.",
        "",
        "Tensor bytes each rank holds after a step (parameters: its local shards under FSDP; "
        "gradients before `zero_grad`; AdamW's `exp_avg` + `exp_avg_sq`), and the rank's peak "
        "resident memory (`ru_maxrss`: the Python process, libraries and DDP's gradient buckets "
        "included).",
        "",
        "| run | rank | parameters GB | gradients GB | AdamW states GB | sum GB | vs 1 process | peak RSS GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, ranks in results.items():
        for rank, r in enumerate(ranks):
            total = r["params"] + r["grads"] + r["optimizer"]
            ratio = total / (base["params"] + base["grads"] + base["optimizer"])
            label = {"single": "1 process", "ddp": "DDP, 2 processes", "fsdp": "FSDP2, 2 processes"}[name]
            lines.append(
                f"| {label} | {rank} | {r['params'] / GB:.3f} | {r['grads'] / GB:.3f} | "
                f"{r['optimizer'] / GB:.3f} | {total / GB:.3f} | {ratio:.2f} | {r['peak_rss'] / GB:.2f} |"
            )
    lines += [
        "",
        "DDP keeps a full copy of the weights, gradients and optimizer states on every rank "
        "(ratio 1.00, and its gradient buckets add another gradient-sized buffer to the RSS); "
        "FSDP2 keeps 1/2 of each per rank (ratio 0.50). The unsharded bf16/fp32 copy of one block "
        "exists only while that block runs, and every rank built the whole model before sharding "
        "it, so the peak RSS falls by less than half. The gradients are smaller than the weights: "
        "the last block's text-stream MLP and output projection (85 M parameters) feed nothing "
        "that reaches the output, so they get none.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sharded_cpu.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.layers, args.dtype, args.steps, args.report)
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: _launch(name, n, args, Path(tmp) / name) for name, n in RUNS}
    table = _table(results, args, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
