"""Issue 17's workload: one Qwen-Image LoRA training step, our path against a bare diffusers loop.

    python bench/gpu_qwen_image.py                          # real size on a GPU (bf16)
    python bench/gpu_qwen_image.py --layers 2 --heads 2 --head-dim 32 --size 64 --device cpu
    LAYERS=2 WIDTH=64 python bench/gpu_qwen_image.py --device cpu    # the same, by environment

The DiT is a QwenImageTransformer2DModel with random weights: 60 layers of width 3072 (24 heads
of 128) by default, LoRA rank 32 on to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj, batch 1,
AdamW, SIZE x SIZE (1024: 4096 image tokens) with a prompt of ~128 tokens. Each variant runs
``--warmup`` steps, then ``--steps`` timed steps (median), at both memory points (gradient
checkpointing on and off):

* ``diffsynth``: OUR training path -- the tiny preset's pipeline with this DiT in place of its
  own, ``switch_pipe_to_training_mode``, ``PipelineTrainingModule`` running every unit, the
  ``sft`` loss, ``build_optimizer`` and its step. The frozen encoders' outputs come from the
  feature cache (``--cache-features``), filled in the warm-up: the encoders stay out of the
  timed step. (The text encoder is the tiny one, so ``joint_attention_dim`` is its width:
  only ``txt_in`` differs from the real model, a negligible share of the FLOPs.)
* ``diffusers``: the same DiT config and inputs in a bare loop (peft LoRA, AdamW, MSE).

Reported: s/step, peak GiB (``torch.cuda.max_memory_allocated``; n/a on the CPU), TFLOP/s and
MFU from the analytic count of the issue: forward F = L * (24 N d^2 + 4 N^2 d) with N image +
text tokens and d the width; a step does 2F of model work (forward, and backward to the
inputs only: the base is frozen), whatever is recomputed. MFU = (2F / step time) / --peak-tflops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = "to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj"


def dit_config(args: argparse.Namespace, text_dim: int) -> dict[str, Any]:
    rope = {128: (16, 56, 56), 64: (8, 28, 28), 32: (8, 12, 12)}[args.head_dim]
    return dict(
        patch_size=2, in_channels=64, out_channels=16, num_layers=args.layers,
        attention_head_dim=args.head_dim, num_attention_heads=args.heads,
        joint_attention_dim=text_dim, axes_dims_rope=rope,
    )  # fmt: skip


def flops_per_step(layers: int, tokens: int, width: int) -> float:
    forward = layers * (24 * tokens * width**2 + 4 * tokens**2 * width)
    return 2 * forward


def _cast(model: Any, dtype: Any) -> Any:
    import torch

    return model if dtype == torch.float32 else model.to(dtype)


def _free(device: str) -> None:
    """Give the last variant's memory back before the next one measures its peak."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Any, args: argparse.Namespace, device: Any) -> tuple[float, float | None]:
    """(median s/step over the timed steps, peak GiB or None off CUDA)."""
    import torch

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def ours(args: argparse.Namespace, tiny: Path, checkpointing: bool) -> tuple[float, float | None, int]:
    """Our training path; (s/step, peak GiB, tokens per sample)."""
    import torch
    from diffusers import QwenImageTransformer2DModel
    from PIL import Image

    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.cache import FeatureCache
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_core.training.optim import build_optimizer
    from diffsynth_core.training.speed import apply_speed_settings

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    pipe = load_pipeline("qwen-image", model_path=str(tiny), device=str(device), torch_dtype=dtype)
    text_dim = pipe.dit.config.joint_attention_dim
    torch.manual_seed(0)
    with torch.device(device):
        pipe.dit = _cast(QwenImageTransformer2DModel(**dit_config(args, text_dim)), dtype).eval()
    switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=32)
    settings = argparse.Namespace(tf32=True, attention=args.attention, compile=args.compile, blocks_to_swap=0)
    apply_speed_settings(pipe, "dit", settings, device)
    manager = get_plugin_manager()
    module = PipelineTrainingModule(pipe, manager.get_loss("sft"), {"use_gradient_checkpointing": checkpointing})
    optimizer = build_optimizer(module.trainable_modules(), "AdamW", 1e-4)
    image = Image.new("RGB", (args.size, args.size), (200, 30, 30))
    data = {"image": image, "prompt": " ".join(["a red picture of a cat on a mat"] * 16)}
    tokens = _tokens(pipe, data)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            loss = module(data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cache = FeatureCache()
    with cache.installed(manager):  # the warm-up fills it: the encoders run once
        result = _timed(step, args, device)
    print(f"(diffsynth, checkpointing {'on' if checkpointing else 'off'}: {cache.summary()})")
    return (*result, tokens)


def _tokens(pipe: Any, data: dict[str, Any]) -> int:
    """Image + text tokens of one sample as the DiT sees them."""
    import torch

    shared, posi, nega = pipe.training_inputs(data)
    with torch.no_grad():
        shared, posi, _ = pipe.run_units({"cfg_scale": 1, **shared}, posi, nega)
    latents = shared["input_latents"]
    return latents.shape[-2] * latents.shape[-1] // 4 + posi["prompt_emb"].shape[1]


def bare(args: argparse.Namespace, text_dim: int, tokens: int, checkpointing: bool) -> tuple[float, float | None]:
    """diffusers + peft + AdamW, no diffsynth code; same config and token counts."""
    import torch
    from diffusers import QwenImageTransformer2DModel
    from peft import LoraConfig, inject_adapter_in_model

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    with torch.device(device):
        dit = _cast(QwenImageTransformer2DModel(**dit_config(args, text_dim)), dtype).requires_grad_(False)
    dit = inject_adapter_in_model(LoraConfig(r=32, lora_alpha=32, target_modules=TARGETS.split(",")), dit)
    if checkpointing:
        dit.enable_gradient_checkpointing()
    params = [p.requires_grad_(True) for n, p in dit.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    side = args.size // 16  # 8x VAE, 2x2 patches
    text = tokens - side * side
    x0 = torch.randn(1, side * side, 64, device=device, dtype=dtype)
    emb = torch.randn(1, text, text_dim, device=device, dtype=dtype)
    mask = torch.ones(1, text, device=device, dtype=torch.long)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        noise, sigma = torch.randn_like(x0), torch.rand(1, device=device)
        with autocast:
            out = dit(
                hidden_states=(1 - sigma) * x0 + sigma * noise, timestep=sigma.to(dtype),
                encoder_hidden_states=emb, encoder_hidden_states_mask=mask,
                img_shapes=[[(1, side, side)]], return_dict=False,
            )[0]  # fmt: skip
        torch.nn.functional.mse_loss(out.float(), (noise - x0).float()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, args, device)


def parse() -> argparse.Namespace:
    env = os.environ
    width = int(env.get("WIDTH", 0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=int(env.get("LAYERS", 60)))
    parser.add_argument("--heads", type=int, default=width // 32 if width else 24)
    parser.add_argument("--head-dim", type=int, default=32 if width else 128, choices=(32, 64, 128))
    parser.add_argument("--size", type=int, default=int(env.get("SIZE", 64 if width else 1024)))
    parser.add_argument("--device", default=env.get("DEVICE", "cuda"))
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--compile", action="store_true", help="regional torch.compile of our path")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the matrix rate MFU divides by")
    args = parser.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    return args


def main() -> None:
    import torch

    from diffsynth_qwen_image.tiny import build_tiny

    args = parse()
    width = args.heads * args.head_dim
    print(f"Qwen-Image DiT: {args.layers} layers, width {width}, {args.size}x{args.size}, "
          f"{args.dtype} on {args.device} (torch {torch.__version__})")  # fmt: skip
    print("| path | gradient checkpointing | s/step | peak GiB | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny")
        for checkpointing in (True, False):
            seconds, peak, tokens = ours(args, tiny, checkpointing)
            _free(args.device)
            flops = flops_per_step(args.layers, tokens, width)
            rows = [("diffsynth", seconds, peak)]
            text_dim = 64  # the tiny text encoder's width (see the docstring)
            rows.append(("diffusers bare", *bare(args, text_dim, tokens, checkpointing)))
            _free(args.device)
            for name, s, p in rows:
                tflops = flops / s / 1e12
                mfu = f"{tflops / args.peak_tflops:.1%}" if args.device.startswith("cuda") else "n/a"
                shown = f"{p:.1f}" if p is not None else "n/a (CPU)"
                print(f"| {name} | {'on' if checkpointing else 'off'} | {s:.4f} | {shown} | {tflops:.3g} | {mfu} |")
            print(f"| ratio bare/ours | {'on' if checkpointing else 'off'} | {rows[1][1] / rows[0][1]:.2f} | | | |")
    print(f"tokens per sample: {tokens}; model FLOPs per step: {flops:.3g}")


if __name__ == "__main__":
    main()
