"""Issue 17's workload: one Qwen-Image LoRA training step, every speed variant, one process.

    python bench/gpu_qwen_image.py --out bench/results/gpu_qwen_image_h200.md   # real size, GPU
    python bench/gpu_qwen_image.py --only compile,bare                          # some variants
    python bench/gpu_qwen_image.py --list                                       # the variants
    OMP_NUM_THREADS=1 LAYERS=2 WIDTH=64 python bench/gpu_qwen_image.py --device cpu \
        --compile-backend aot_eager                                             # CPU smoke run

The DiT is a QwenImageTransformer2DModel with random weights: 60 layers of width 3072 (24 heads
of 128) by default, LoRA rank 32 on to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj, AdamW,
SIZE x SIZE (1024: 4096 image tokens) with a prompt of ~128 tokens. Each variant
(:data:`VARIANTS`) runs ``--warmup`` steps, then ``--steps`` timed steps (median; see
``gpu_common`` for how steps are timed without adding a host synchronisation):

* ``ours``: OUR training path -- the tiny preset's pipeline with this DiT in place of its own,
  ``--base-precision`` applied as ``diffsynth train`` does, ``switch_pipe_to_training_mode``,
  ``apply_speed_settings`` (attention, TF32) and regional compilation of the declared blocks,
  ``PipelineTrainingModule`` running every unit, the ``sft`` loss, the gradient-norm
  measurement, the runner's NaN guard (``StepChecks``: on the device, read every 10 steps; or,
  ``host read per step``, the old per-step host check), ``build_optimizer``'s fused AdamW. At
  batch 1 the frozen encoders' outputs come from the feature cache, filled in the warm-up, so
  the encoders stay out of the timed step; at batch 2 and 4 (one bucket: every image of the
  batch the same size) the tiny encoders run each step. (The text encoder is the tiny one, so
  ``joint_attention_dim`` is its width: only ``txt_in`` differs from the real model, a
  negligible share of the FLOPs.)
* ``bare``: the same DiT config and inputs in a bare loop (peft LoRA, fused AdamW, MSE;
  diffusers' ``compile_repeated_blocks`` for the compiled variant).

Reported: s/step, images/s, peak GiB (``torch.cuda.max_memory_allocated``; n/a on the CPU),
TFLOP/s and MFU from the analytic count of the issue: forward F = L * (24 N d^2 + 4 N^2 d) with
N image + text tokens and d the width; a step does 2F of model work per sample (forward, and
backward to the inputs only: the base is frozen), whatever is recomputed. MFU = (2F / step
time) / --peak-tflops.
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

TARGETS = "to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj"
GUARD_EVERY = 10  # the runner's default --log-every with fused AdamW

V = Variant
# in order of importance: a run cut short by its time limit keeps the first rows (the targets'
# two memory points first, then the references, then the other settings)
VARIANTS: tuple[Variant, ...] = (
    V("ours", "ours", "off", compile=True), V("ours", "ours", "full", compile=True),
    V("bare", "bare", "off"), V("bare", "bare", "full"),
    V("bare", "bare", "off", compile=True), V("bare", "bare", "full", compile=True),
    V("ours", "ours", "off"), V("ours", "ours", "full"),
    V("ours", "ours", "off", compile=True, host_read=True),
    V("ours", "ours", "selective", compile=True),
    V("ours", "ours", "off", compile=True, precision="fp8-compute"),
    V("ours", "ours", "full", compile=True, precision="fp8-compute"),
    V("ours", "ours", "full", compile=True, precision="fp8"),
    V("ours", "ours", "full", compile=True, batch=2), V("ours", "ours", "full", compile=True, batch=4),
    V("ours", "ours", "off", compile=True, batch=2),
    V("ours", "ours", "off", compile=True, attention="cudnn"),
    V("ours", "ours", "off", compile=True, attention="flash"),
    V("ours", "ours", "off", compile=True, attention="sage"),
)  # fmt: skip
del V


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


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    image = Image.new("RGB", (args.size, args.size), (200, 30, 30))
    return {"image": image, "prompt": " ".join(["a red picture of a cat on a mat"] * 16)}


def count_tokens(args: argparse.Namespace, tiny: Path) -> int:
    """Image + text tokens of one sample as the DiT sees them (the units of the tiny pipeline:
    the count depends on the image size and the prompt, not on the DiT)."""
    import torch

    from diffsynth_core.pipeline import load_pipeline

    pipe = load_pipeline("qwen-image", model_path=str(tiny), device=args.device, torch_dtype=getattr(torch, args.dtype))
    shared, posi, nega = pipe.training_inputs(_sample(args))
    with torch.no_grad():
        shared, posi, _ = pipe.run_units({"cfg_scale": 1, **shared}, posi, nega)
    latents = shared["input_latents"]
    return latents.shape[-2] * latents.shape[-1] // 4 + posi["prompt_emb"].shape[1]


def ours(args: argparse.Namespace, tiny: Path, variant: Variant) -> tuple[float, float | None]:
    """Our training path; (s/step, peak GiB)."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    from diffsynth_core.blocks import repeated_blocks
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.cache import FeatureCache
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_core.training.optim import build_optimizer
    from diffsynth_core.training.quantize import apply_base_precision, check_device_runs
    from diffsynth_core.training.speed import apply_speed_settings, compile_blocks

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    check_device_runs(variant.precision, device)
    pipe = load_pipeline("qwen-image", model_path=str(tiny), device=str(device), torch_dtype=dtype)
    text_dim = pipe.dit.config.joint_attention_dim
    torch.manual_seed(0)
    with torch.device(device):
        pipe.dit = _cast(QwenImageTransformer2DModel(**dit_config(args, text_dim)), dtype).eval()
    apply_base_precision(pipe, variant.precision, models=("dit",))  # before LoRA, as train does
    switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=32)
    settings = argparse.Namespace(tf32=True, attention=variant.attention, compile=False, blocks_to_swap=0)
    apply_speed_settings(pipe, "dit", settings, device)
    if variant.compile:
        compile_blocks(repeated_blocks(pipe, "dit", "--compile"), backend=args.compile_backend)
    manager = get_plugin_manager()
    inputs = {"use_gradient_checkpointing": variant.checkpointing != "off",
              "use_gradient_checkpointing_policy": "selective" if variant.checkpointing == "selective" else "full"}  # fmt: skip
    module = PipelineTrainingModule(pipe, manager.get_loss("sft"), inputs)
    params = list(module.trainable_modules())
    optimizer = build_optimizer(params, "AdamW", 1e-4)
    one = _sample(args)
    data = one if variant.batch == 1 else {k: [v] * variant.batch for k, v in one.items()}
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    guard = _Guard(optimizer, device, variant.host_read)

    def step() -> None:
        with autocast:
            loss = module(data)
        guard.loss(loss.detach())
        loss.backward()
        guard.gradient_norm(torch.nn.utils.clip_grad_norm_(params, math.inf))  # measured, as the runner
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        guard.step_done()

    cache = FeatureCache()
    if variant.batch == 1:
        with cache.installed(manager):  # the warm-up fills it: the encoders run once
            result = timed(step, args.warmup, args.steps, device)
        print(f"({variant.label()}, checkpointing {variant.checkpointing}: {cache.summary()})")
    else:
        result = timed(step, args.warmup, args.steps, device)
    return result


class _Guard:
    """The runner's NaN guard around the bench's step: :class:`StepChecks` (on the device, the
    host reads every ``GUARD_EVERY`` steps), or the old check (``host``: loss and norm read
    on the host every step)."""

    def __init__(self, optimizer: Any, device: Any, host: bool) -> None:
        from types import SimpleNamespace

        from diffsynth_core.training.metrics import MetricsLog
        from diffsynth_core.training.state import TrainingPosition
        from diffsynth_core.training.step_checks import StepChecks

        self.host, self.position = host, TrainingPosition()
        accelerator = SimpleNamespace(distributed_type="NO", scaler=None, device=device)
        log = MetricsLog(Path(tempfile.gettempdir()), False, 0, 0, progress=False)
        self.checks = StepChecks(None, log, accelerator, optimizer, GUARD_EVERY, self.position)  # type: ignore[arg-type]
        assert self.checks.on_device, "build_optimizer should give a fused AdamW here"

    def loss(self, loss: Any) -> None:
        if self.host:
            assert math.isfinite(float(loss))
        else:
            self.checks.loss(loss)

    def gradient_norm(self, norm: Any) -> None:
        if self.host:
            assert math.isfinite(float(norm))
        else:
            self.checks.gradient_norm(norm)
            self.norm = norm

    def step_done(self) -> None:
        self.position = self.position.after_step(batch=self.position.batch + 1)
        if not self.host:
            self.checks.step_done(self.position, 0, 1e-4, self.norm, 1)


def bare(args: argparse.Namespace, text_dim: int, tokens: int, variant: Variant) -> tuple[float, float | None]:
    """diffusers + peft + AdamW, no diffsynth code; same config and token counts."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    with torch.device(device):
        dit = _cast(QwenImageTransformer2DModel(**dit_config(args, text_dim)), dtype).requires_grad_(False)
    dit, _params, optimizer = bare_lora(dit, TARGETS, variant, args.compile_backend)
    side = args.size // 16  # 8x VAE, 2x2 patches
    text = tokens - side * side
    b = variant.batch
    x0 = torch.randn(b, side * side, 64, device=device, dtype=dtype)
    emb = torch.randn(b, text, text_dim, device=device, dtype=dtype)
    mask = torch.ones(b, text, device=device, dtype=torch.long)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        noise, sigma = torch.randn_like(x0), torch.rand(b, device=device)
        with autocast:
            out = dit(
                hidden_states=(1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise,
                timestep=sigma.to(dtype), encoder_hidden_states=emb, encoder_hidden_states_mask=mask,
                img_shapes=[[(1, side, side)]] * b, return_dict=False,
            )[0]  # fmt: skip
        torch.nn.functional.mse_loss(out.float(), (noise - x0).float()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, args.warmup, args.steps, device)


def parse() -> argparse.Namespace:
    env = os.environ
    width = int(env.get("WIDTH", 0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=int(env.get("LAYERS", 60)))
    parser.add_argument("--heads", type=int, default=width // 32 if width else 24)
    parser.add_argument("--head-dim", type=int, default=32 if width else 128, choices=(32, 64, 128))
    parser.add_argument("--size", type=int, default=int(env.get("SIZE", 64 if width else 1024)))
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    add_common_arguments(parser, steps=6, warmup=2)
    return finish_arguments(parser.parse_args())


def main() -> None:
    import torch

    from diffsynth_core.errors import DiffSynthError
    from diffsynth_qwen_image.tiny import build_tiny

    args = parse()
    variants = selected(VARIANTS, args.only)
    if args.list:
        print("\n".join(f"{v.label()} | {v.checkpointing} | batch {v.batch}" for v in variants))
        return
    width = args.heads * args.head_dim
    device = torch.device(args.device)
    results = Results(args.out)
    results.line(f"Qwen-Image DiT: {args.layers} layers, width {width}, {args.size}x{args.size}, "
                 f"{args.dtype} on {args.device} (torch {torch.__version__}), median of {args.steps} "
                 f"steps after {args.warmup}\n")  # fmt: skip
    results.line(HEADER)
    text_dim = 64  # the tiny text encoder's width (see the docstring)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny")
        tokens = count_tokens(args, tiny)
        for variant in variants:
            try:
                if variant.path == "ours":
                    seconds, peak = ours(args, tiny, variant)
                else:
                    seconds, peak = bare(args, text_dim, tokens, variant)
            except (DiffSynthError, ImportError, RuntimeError) as exc:  # a backend missing here
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
                results.line(skipped(variant, first))
                free(device)
                continue
            flops = variant.batch * flops_per_step(args.layers, tokens, width)
            results.line(row(variant, seconds, peak, flops, args.peak_tflops, device.type == "cuda"))
            free(device)
    results.line(f"\ntokens per sample: {tokens}; model FLOPs per sample and step: "
                 f"{flops_per_step(args.layers, tokens, width):.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
