"""What a LoRA step keeps for backward over a quantized frozen base (CPU, real width).

    python bench/quantized_saved_cpu.py [--blocks 2] [--size 256]

A Qwen-Image DiT of the real width (3072 = 24 heads of 128) with ``--blocks`` blocks and random
weights, bf16, LoRA rank 32 on the attention projections (peft, fp32 LoRA weights), one
forward of a ``--size`` x ``--size`` image (+ 16 text tokens) without gradient checkpointing.
Counted: the bytes of every tensor autograd saves for backward that is not a parameter of the
model (saved-tensor hooks; a quantized weight counts by its inner tensors). That is what stays
in memory from the forward to the backward, per precision:

* ``bf16``: the base as loaded;
* ``fp8 (torchao's linear)``: torchao's weight-only fp8 as torchao computes it;
* ``fp8`` / ``int8``: ours (``training/quantize.py``: torchao's linear inside an autograd
  function that keeps the quantized weight, not a bf16 copy);
* ``fp8-compute``: ``training/fp8_compute.py``.

Results go to ``bench/results/quantized_saved_cpu.md``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "quantized_saved_cpu.md"
TARGETS = "to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj"


def _inner(tensor: torch.Tensor) -> list[torch.Tensor]:
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is None or type(tensor) in (torch.Tensor, torch.nn.Parameter):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]
    return [t for name in names for t in _inner(getattr(tensor, name))]


def saved_bytes(precision: str, blocks: int, size: int) -> tuple[int, int]:
    """(bytes saved for backward beyond the parameters, bytes of the model's weights)."""
    from diffusers import QwenImageTransformer2DModel

    from diffsynth_core.lora.inject import inject_lora
    from diffsynth_core.training.quantize import quantize_model, weight_bytes

    torch.manual_seed(0)
    dit = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=blocks, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=64, axes_dims_rope=(16, 56, 56),
    ).to(torch.bfloat16).requires_grad_(False)  # fmt: skip
    if precision != "bf16":
        kind = "fp8" if precision.startswith("fp8 (") else precision
        names = quantize_model(dit.transformer_blocks, kind)
        if precision.startswith("fp8 ("):  # torchao's own linear: undo ours
            for name in names:
                del dit.transformer_blocks.get_submodule(name).forward
    inject_lora(dit, TARGETS, rank=32)
    for name, param in dit.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
    own = {t.untyped_storage().data_ptr() for p in dit.parameters() for t in _inner(p)}
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        for inner in _inner(tensor):
            if inner.untyped_storage().data_ptr() not in own:
                total += inner.nbytes
        return tensor

    side = size // 16
    x = torch.randn(1, side * side, 64, dtype=torch.bfloat16)
    text = torch.randn(1, 16, 64, dtype=torch.bfloat16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
        dit(hidden_states=x, encoder_hidden_states=text, encoder_hidden_states_mask=torch.ones(1, 16),
            timestep=torch.tensor([0.5]), img_shapes=[[(1, side, side)]], return_dict=False)  # fmt: skip
    return total, weight_bytes(dit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for precision in ("bf16", "fp8 (torchao's linear)", "fp8", "int8", "fp8-compute"):
        saved, weights = saved_bytes(precision, args.blocks, args.size)
        rows.append(f"| {precision} | {weights / 2**20:,.0f} | {saved / 2**20:,.0f} | {saved / args.blocks / 2**20:,.0f} |")
    tokens = (args.size // 16) ** 2 + 16
    lines = [
        "# Saved for backward over a quantized frozen base (CPU)",
        "",
        f"`python bench/quantized_saved_cpu.py --blocks {args.blocks} --size {args.size}` on "
        f"{platform.machine()}, torch {torch.__version__}: a Qwen-Image DiT of width 3072 with "
        f"{args.blocks} blocks, {tokens} tokens, bf16, LoRA rank 32 on the attention projections, "
        "no gradient checkpointing. Saved: the bytes autograd keeps from forward to backward "
        "beyond the model's parameters (activations, and any weight copy).",
        "",
        "| base precision | model weights MiB | saved for backward MiB | per block MiB |",
        "|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
