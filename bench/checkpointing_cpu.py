"""Peak activation memory of one LoRA training step: no checkpointing, full, selective (CPU).

    python bench/checkpointing_cpu.py [--width 3072] [--layers 2] [--image-tokens 1024]

A Qwen-Image DiT at the real width (diffusers' ``QwenImageTransformer2DModel``, random
weights, fp32) with ``--layers`` blocks, LoRA rank 32 on ``to_q,to_k,to_v,add_q_proj,
add_k_proj,add_v_proj`` (the frozen base needs no weight gradients), ``--image-tokens`` image
tokens and 128 text tokens, batch 1. Each mode runs one forward + backward under a dispatch mode that
counts the bytes of every tensor storage created in the step while it is alive (torch's
``MemTracker`` refuses frozen parameters); the figure is its peak: the saved activations plus
the temporaries of the moment, the LoRA gradients included (small), the weights not. Checkpointing goes
through ``set_gradient_checkpointing`` (``diffsynth_core/training/module.py``), the path the
trainer takes. After an untimed warm-up step (lazily built caches), the first mode is repeated at the end and must give the same peak (a check that
the tracker is stable). Results go to ``bench/results/checkpointing_cpu.md`` with ``--write``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGETS = ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"]
MODES = {"off": (False, "full"), "full": (True, "full"), "selective": (True, "selective")}


def build(width: int, layers: int) -> torch.nn.Module:
    from diffusers import QwenImageTransformer2DModel
    from peft import LoraConfig

    torch.manual_seed(0)
    dit = QwenImageTransformer2DModel(
        num_layers=layers, attention_head_dim=128, num_attention_heads=width // 128,
        joint_attention_dim=3584, axes_dims_rope=(16, 56, 56),
    )  # fmt: skip
    dit.requires_grad_(False)
    dit.add_adapter(LoraConfig(r=32, lora_alpha=32, target_modules=TARGETS))
    for name, param in dit.named_parameters():
        if "lora_B" in name:  # non-zero, so every LoRA weight gets a gradient
            torch.nn.init.normal_(param, std=0.01)
    return dit


def inputs(image_tokens: int) -> dict[str, Any]:
    side = int(image_tokens**0.5)
    return {
        "hidden_states": torch.randn(1, side * side, 64),
        "encoder_hidden_states": torch.randn(1, 128, 3584),
        "encoder_hidden_states_mask": torch.ones(1, 128, dtype=torch.long),
        "timestep": torch.tensor([0.6]), "img_shapes": [(1, side, side)], "return_dict": False,
    }  # fmt: skip


class LiveBytes:
    """A dispatch mode counting the bytes of every storage created under it while it lives:
    ``peak`` is the step's activation peak (weights and inputs existed before: not counted)."""

    def __init__(self, existing: set[int]) -> None:
        self.existing, self.live, self.now, self.peak = existing, {}, 0, 0

    def mode(self) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                for item in tree_flatten(out)[0]:
                    if isinstance(item, torch.Tensor):
                        counter.add(item.untyped_storage())
                return out

        return Mode()

    def add(self, storage: Any) -> None:
        key = storage.data_ptr()
        if key in self.existing or key in self.live or storage.nbytes() == 0:
            return  # a view of a weight or input, or of a storage already counted
        self.live[key] = (storage.nbytes(), weakref.ref(storage, lambda _, k=key: self.free(k)))
        self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)

    def free(self, key: int) -> None:
        size, _ = self.live.pop(key)
        self.now -= size


def peak_activations(dit: torch.nn.Module, batch: dict[str, Any], mode: str) -> tuple[float, float]:
    """(peak MiB of the storages created in one forward + backward, seconds)."""
    from diffsynth_core.training.module import set_gradient_checkpointing

    enabled, policy = MODES[mode]
    set_gradient_checkpointing(dit, enabled, False, policy)
    dit.train()
    dit.zero_grad(set_to_none=True)
    gc.collect()
    tensors = [*dit.parameters(), *dit.buffers(), *(v for v in batch.values() if isinstance(v, torch.Tensor))]
    counter = LiveBytes({t.untyped_storage().data_ptr() for t in tensors})
    start = time.perf_counter()
    with counter.mode():
        out = dit(**batch)[0]
        out.pow(2).mean().backward()
    seconds = time.perf_counter() - start
    return counter.peak / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=3072)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--image-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write bench/results/checkpointing_cpu.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dit = build(args.width, args.layers)
    batch = inputs(args.image_tokens)
    peak_activations(dit, batch, "off")  # warm-up: lazily built caches (RoPE) stay out of it
    rows = []
    for mode in [*MODES, "off"]:
        mib, seconds = peak_activations(dit, batch, mode)
        rows.append((mode, mib, seconds))
        print(f"{mode:10s} peak activations {mib:9.1f} MiB   {seconds:6.1f} s", flush=True)
    assert abs(rows[0][1] - rows[-1][1]) < 1.0, "the tracker's peak moved between equal runs"
    table = ["| checkpointing | peak activation MiB | vs off | s (fwd+bwd, CPU) |", "|---|---|---|---|"]
    table += [f"| {m} | {mib:.0f} | {mib / rows[0][1]:.2f} | {s:.1f} |" for m, mib, s in rows[:-1]]
    text = "\n".join(table)
    print(text)
    if args.write:
        out = REPO / "bench" / "results" / "checkpointing_cpu.md"
        out.write_text(
            "# Peak activation memory by checkpointing policy (CPU)\n\n"
            f"`python bench/checkpointing_cpu.py --width {args.width} --layers {args.layers} "
            f"--image-tokens {args.image_tokens} --write`: Qwen-Image DiT, {args.layers} blocks "
            f"of width {args.width}, {args.image_tokens} image + 128 text tokens, batch 1, fp32, "
            f"LoRA rank 32 on the attention projections, one forward + backward; peak bytes of "
            f"the storages created in the step (activations + temporaries). torch {torch.__version__}, "
            f"{platform.machine()}, {args.threads} threads on a shared machine (the times are "
            "indicative only).\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
