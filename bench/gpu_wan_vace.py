"""Issue 17's video workload: one Wan2.1-VACE-14B LoRA training step at 480p, our path and bare.

    python bench/gpu_wan_vace.py --out bench/results/gpu_wan_vace_h200.md   # real size, GPU
    OMP_NUM_THREADS=1 LAYERS=2 WIDTH=64 python bench/gpu_wan_vace.py --device cpu \\
        --compile-backend aot_eager                                          # CPU smoke run

The DiT is diffusers' WanVACETransformer3DModel with random weights in the 14B release's shape
(40 layers of width 5120 = 40 heads of 128, ffn 13824, a VACE block beside every 5th layer),
LoRA rank 32 on the family's default targets (attention projections and FFN), batch 1, AdamW,
bf16, 81 frames of 480x832 (21 x 60 x 104 latents: 32760 video tokens) with a VACE control
video and mask of the same size. Gradient checkpointing is on in every variant (without it the
activations of 40 blocks at 32760 tokens do not fit 141 GB).

* ``ours``: the tiny Wan VACE preset's pipeline with this DiT in place of its own (its
  ``text_dim`` is the tiny UMT5's width: only the text projection differs from the real model),
  ``switch_pipe_to_training_mode``, regional compilation of the declared blocks,
  ``PipelineTrainingModule`` with every unit, the ``sft`` loss, fused AdamW. The encoders'
  outputs come from the feature cache, filled in the warm-up.
* ``bare``: the same DiT in a bare loop (peft LoRA, fused AdamW, MSE on random latents).

FLOPs: forward F = (L + V) * (24 N d^2 + 4 N^2 d) + L * 4 N T d (cross-attention to T = 512
text tokens; V VACE blocks), 2F per step as in the Qwen-Image benchmark.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import (  # noqa: E402
    HEADER,
    Results,
    Variant,
    add_common_arguments,
    bare_lora,
    finish_arguments,
    free,
    row,
    selected,
    skipped,
    timed,
)  # fmt: skip

V = Variant
VARIANTS: tuple[Variant, ...] = (
    V("ours", "ours", "full", compile=True), V("bare", "bare", "full"), V("ours", "ours", "full"),
    V("bare", "bare", "full", compile=True),
)  # fmt: skip
del V
TEXT_TOKENS = 512


def dit_config(args: argparse.Namespace, text_dim: int) -> dict[str, Any]:
    from diffsynth_vace.tiny import TRANSFORMER_CONFIG

    return {
        **TRANSFORMER_CONFIG, "num_attention_heads": args.heads, "attention_head_dim": args.head_dim,
        "ffn_dim": args.ffn, "num_layers": args.layers, "text_dim": text_dim,
        "vace_layers": list(range(0, args.layers, args.vace_every)), "rope_max_seq_len": 1024,
    }  # fmt: skip


def latent_shape(args: argparse.Namespace) -> tuple[int, int, int]:
    return (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8


def flops_per_step(args: argparse.Namespace) -> float:
    frames, rows, cols = latent_shape(args)
    tokens, width = frames * (rows // 2) * (cols // 2), args.heads * args.head_dim
    blocks = args.layers + len(range(0, args.layers, args.vace_every))
    forward = blocks * (24 * tokens * width**2 + 4 * tokens**2 * width)
    forward += args.layers * 4 * tokens * TEXT_TOKENS * width
    return 2 * forward


def _clip(args: argparse.Namespace, value: int) -> list[Any]:
    from PIL import Image

    return [Image.new("RGB", (args.width, args.height), (value, 40, 200 - value))] * args.frames


def ours(args: argparse.Namespace, tiny: Path, variant: Variant) -> tuple[float, float | None]:
    import torch
    from diffusers import WanVACETransformer3DModel

    from diffsynth_core.blocks import repeated_blocks
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.cache import FeatureCache
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_core.training.optim import build_optimizer
    from diffsynth_core.training.speed import compile_blocks
    from diffsynth_vace.family import LORA_TARGETS

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    pipe = load_pipeline("wan-vace", model_path=str(tiny), device=str(device), torch_dtype=dtype)
    text_dim = pipe.dit.config.text_dim
    torch.manual_seed(0)
    with torch.device(device):
        pipe.dit = WanVACETransformer3DModel(**dit_config(args, text_dim)).to(dtype).eval()
    switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=32)
    if variant.compile:
        compile_blocks(repeated_blocks(pipe, "dit", "--compile"), backend=args.compile_backend)
    manager = get_plugin_manager()
    module = PipelineTrainingModule(pipe, manager.get_loss("sft"), {"use_gradient_checkpointing": True})
    params = list(module.trainable_modules())
    optimizer = build_optimizer(params, "AdamW", 1e-4)
    data = {"prompt": "a white square moves right", "video": _clip(args, 30),
            "vace_video": _clip(args, 90), "vace_video_mask": _clip(args, 255)}  # fmt: skip
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            loss = module(data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cache = FeatureCache()
    with cache.installed(manager):
        result = timed(step, args.warmup, args.steps, device)
    print(f"({variant.label()}: {cache.summary()})")
    return result


def bare(args: argparse.Namespace, text_dim: int, variant: Variant) -> tuple[float, float | None]:
    import torch
    from diffusers import WanVACETransformer3DModel

    from diffsynth_vace.family import LORA_TARGETS

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    with torch.device(device):
        dit = WanVACETransformer3DModel(**dit_config(args, text_dim)).to(dtype).requires_grad_(False)
    dit, _params, optimizer = bare_lora(dit, LORA_TARGETS, variant, args.compile_backend)
    frames, rows, cols = latent_shape(args)
    x0 = torch.randn(1, 16, frames, rows, cols, device=device, dtype=dtype)
    control = torch.randn(1, 96, frames, rows, cols, device=device, dtype=dtype)
    text = torch.randn(1, TEXT_TOKENS, text_dim, device=device, dtype=dtype)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        noise, sigma = torch.randn_like(x0), torch.rand(1, device=device)
        with autocast:
            out = dit(hidden_states=(1 - sigma) * x0 + sigma * noise, timestep=sigma * 1000,
                      encoder_hidden_states=text, control_hidden_states=control, return_dict=False)[0]  # fmt: skip
        torch.nn.functional.mse_loss(out.float(), (noise - x0).float()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, args.warmup, args.steps, device)


def parse() -> argparse.Namespace:
    env = os.environ
    width = int(env.get("WIDTH", 0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=int(env.get("LAYERS", 40)))
    parser.add_argument("--heads", type=int, default=width // 32 if width else 40)
    parser.add_argument("--head-dim", type=int, default=32 if width else 128)
    parser.add_argument("--ffn", type=int, default=2 * width if width else 13824)
    parser.add_argument("--vace-every", type=int, default=5 if not width else 2)
    parser.add_argument("--frames", type=int, default=int(env.get("FRAMES", 5 if width else 81)))
    parser.add_argument("--height", type=int, default=32 if width else 480)
    parser.add_argument("--width", type=int, default=32 if width else 832)
    add_common_arguments(parser, steps=3, warmup=1)
    return finish_arguments(parser.parse_args())


def main() -> None:
    import torch

    from diffsynth_core.errors import DiffSynthError
    from diffsynth_vace.tiny import TEXT_ENCODER_CONFIG, build_tiny

    args = parse()
    device = torch.device(args.device)
    results = Results(args.out)
    frames, rows, cols = latent_shape(args)
    results.line(f"Wan VACE DiT: {args.layers} layers, width {args.heads * args.head_dim}, "
                 f"{args.frames} frames of {args.height}x{args.width} ({frames}x{rows}x{cols} latents), "
                 f"{args.dtype} on {args.device} (torch {torch.__version__}), median of {args.steps} "
                 f"steps after {args.warmup}\n")  # fmt: skip
    results.line(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny")
        for variant in selected(VARIANTS, args.only):
            try:
                if variant.path == "ours":
                    seconds, peak = ours(args, tiny, variant)
                else:
                    seconds, peak = bare(args, TEXT_ENCODER_CONFIG["d_model"], variant)
            except (DiffSynthError, ImportError, RuntimeError) as exc:
                results.line(skipped(variant, (str(exc).strip().splitlines() or ["?"])[0][:120]))
                free(device)
                continue
            results.line(row(variant, seconds, peak, flops_per_step(args), args.peak_tflops, device.type == "cuda"))
            free(device)
    results.line(f"\nmodel FLOPs per step: {flops_per_step(args):.3g}")


if __name__ == "__main__":
    main()
