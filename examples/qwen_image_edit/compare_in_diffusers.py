"""Edit with diffsynth and with diffusers' edit pipeline at diffusers' real sizes; compare.

    python examples/qwen_image_edit/compare_in_diffusers.py [qwen-image-edit|qwen-image-edit-plus] [MODEL_FOLDER] [LORA]

MODEL_FOLDER defaults to the family's tiny preset (built on first use). Both pipelines edit the
bundled ``edit_00.png`` (plus: with ``swatch_00.png`` as picture 2) from the same seeded noise
at the edit sizes diffusers uses (about 1024x1024 for the VAE; 384x384 for plus's vision
tower), with true CFG, and the script prints the largest latent difference (about 5e-7 in fp32
on the tiny presets). It takes minutes on a CPU even for the tiny models: the reference image
alone is 4096 DiT tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
from PIL import Image

from diffsynth_core import get_plugin_manager, load_pipeline, tiny_folder
from diffsynth_qwen_image.latents import pack_latents

DATA = Path(__file__).parent / "data"
PROMPT = "give the circle in picture 1 the colour of picture 2"


def main(family: str, folder: str | None, lora: str | None) -> float:
    folder = folder or str(tiny_folder(get_plugin_manager().get_family(family)))
    plus = family == "qwen-image-edit-plus"
    names = ("edit_00.png", "swatch_00.png") if plus else ("edit_00.png",)
    images = [Image.open(DATA / n).convert("RGB") for n in names]
    ours = load_pipeline(family, model_path=folder)
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    # our processor object: diffusers would build Qwen2VLProcessor, which needs torchvision
    theirs = cls.from_pretrained(folder, processor=ours.processor)
    theirs.set_progress_bar_config(disable=True)
    if lora:
        ours.load_lora(lora)
        theirs.load_lora_weights(lora)
    edit = images if plus else images[0]
    mine = ours(PROMPT, edit_image=edit, negative_prompt="blurry", cfg_scale=4.0, seed=0,
                num_inference_steps=2, progress=False, output_type="latent")  # fmt: skip
    ref = theirs(image=edit, prompt=PROMPT, negative_prompt="blurry", true_cfg_scale=4.0,
                 num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="latent").images  # fmt: skip
    return (pack_latents(mine) - ref).abs().max().item()


if __name__ == "__main__":
    args = sys.argv[1:] + [None] * 3  # type: ignore[list-item]
    diff = main(args[0] or "qwen-image-edit-plus", args[1], args[2])
    print(f"max abs latent difference, diffsynth vs diffusers: {diff:.2e}")
