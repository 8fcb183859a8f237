"""Run the same FLUX.1 generation in diffsynth and in diffusers' FluxPipeline and compare.

    python examples/flux/compare_in_diffusers.py [--model flux-dev] [--model-path FOLDER]
        [--lora FILE] [--dtype float32|bfloat16] [--device cpu|cuda] [--size 64] [--steps 4]

Without ``--model-path`` it uses the tiny preset (built on first use). Both pipelines start
from the same seeded noise, so the final latents should agree (about 1e-6 in float32 on the
tiny preset; at real size in bfloat16 expect bfloat16 rounding). With ``--lora`` (a file in
the default ``--lora-format diffusers``: diffusers does not read the ``comfyui`` layout) the
file is merged into our transformer and loaded with diffusers' ``load_lora_weights``; it then
also prints how much the LoRA moves each side. This is the check to run on real weights.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from diffsynth_core import get_plugin_manager, load_pipeline, tiny_folder

PROMPT = "a red circle in the center, a blue background"


def ours(args: argparse.Namespace, folder: str, lora: str | None) -> torch.Tensor:
    from diffsynth_flux.latents import pack_latents

    pipe = load_pipeline(args.model, model_path=folder, device=args.device, torch_dtype=args.dtype)
    if lora:
        pipe.load_lora(lora)
    out = pipe(PROMPT, seed=0, progress=False, output_type="latent", **_size(args))
    return pack_latents(out).float().cpu()


def theirs(args: argparse.Namespace, folder: str, lora: str | None) -> torch.Tensor:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(folder, torch_dtype=args.dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        pipe.load_lora_weights(lora)
    generator = torch.Generator("cpu").manual_seed(0)  # our noise is drawn on the CPU too
    out = pipe(PROMPT, generator=generator, output_type="latent", **_size(args)).images
    return out.float().cpu()


def _size(args: argparse.Namespace) -> dict[str, Any]:
    steps = args.steps or (28 if args.model == "flux-dev" else 4)
    return dict(height=args.size, width=args.size, num_inference_steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="flux-dev", choices=("flux-dev", "flux-schnell"))
    parser.add_argument("--model-path")
    parser.add_argument("--lora")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    family = get_plugin_manager().get_family(args.model)
    folder = args.model_path or str(tiny_folder(family))
    a, c = ours(args, folder, None), theirs(args, folder, None)
    print(f"diffsynth vs diffusers: max abs diff {(a - c).abs().max().item():.3e} (latents)")
    if args.lora:
        b, d = ours(args, folder, args.lora), theirs(args, folder, args.lora)
        print(f"the LoRA moves diffsynth's latents by {(b - a).abs().max().item():.3e} (max)")
        print(f"the LoRA moves diffusers' latents by  {(d - c).abs().max().item():.3e} (max)")
        print(f"diffsynth vs diffusers with the LoRA: {(b - d).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
