"""Generate with a trained LoRA in diffsynth and in diffusers, and compare the pictures.

    python examples/qwen_image/compare_in_diffusers.py [LORA] [MODEL_FOLDER]

LORA defaults to the README's run (runs/demo/final.safetensors), MODEL_FOLDER to the tiny
preset that run used. Both pipelines start from the same seeded noise, so the LoRA must change
diffusers' picture exactly as it changes ours: the script prints both changes and the gap.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

from diffsynth_core import get_plugin_manager, load_pipeline, tiny_folder

PROMPT = "a red circle in the center, a blue background"
SIZE = dict(height=64, width=64, num_inference_steps=8)


def pixels(image: object) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def ours(folder: str, lora: str | None) -> np.ndarray:
    pipe = load_pipeline("qwen-image", model_path=folder)
    if lora:
        pipe.load_lora(lora)
    return pixels(pipe(PROMPT, seed=0, cfg_scale=1.0, progress=False, **SIZE))


def theirs(folder: str, lora: str | None) -> np.ndarray:
    pipe = DiffusersQwenImagePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        pipe.load_lora_weights(lora)
    generator = torch.Generator("cpu").manual_seed(0)
    return pixels(pipe(PROMPT, generator=generator, **SIZE).images[0])


def main() -> None:
    lora = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/final.safetensors"
    family = get_plugin_manager().get_family("qwen-image")
    folder = sys.argv[2] if len(sys.argv) > 2 else str(tiny_folder(family))
    a, b = ours(folder, None), ours(folder, lora)
    c, d = theirs(folder, None), theirs(folder, lora)
    print(f"LoRA changes diffsynth's picture by {np.abs(b - a).mean():.3f} grey levels (mean)")
    print(f"LoRA changes diffusers' picture by  {np.abs(d - c).mean():.3f} grey levels (mean)")
    print(f"diffsynth vs diffusers, with the LoRA: max {np.abs(b - d).max():.1f} grey levels")


if __name__ == "__main__":
    main()
