"""The ``tiny`` preset: the tiny Qwen-Image model plus a tiny ControlNet, written offline.

``build_tiny(folder)`` writes the tiny Qwen-Image preset (official layout) and a ControlNet in
``folder/controlnet/``, flat like the InstantX repositories (``config.json`` +
``diffusion_pytorch_model.safetensors``), as diffusers' ``QwenImageControlNetPipeline`` saves
it. ``model_index.json`` is extended with the ControlNet, so
``QwenImageControlNetPipeline.from_pretrained(folder)`` reads the folder too.

The ControlNet is ``from_transformer`` of the tiny DiT (its 2 blocks copied), but its control
embedding and output projections, zero in a fresh ControlNet, get small seeded random values:
the preset stands for a *trained* ControlNet, so a control image visibly changes the output.
A new, untrained ControlNet is what ``--controlnet-layers N`` gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Scales of the seeded "trained" weights: large enough that the tiny VAE's pictures for two
# control images differ visibly (a few grey levels), small enough to stay far from saturation.
EMBEDDER_STD = 0.3
BLOCK_STD = 0.2
SEED = 3


def tiny_controlnet(dit: Any, inpaint: bool = False, trained: bool = True) -> Any:
    """A ControlNet of the tiny DiT's blocks; ``trained`` gives its zero layers seeded values."""
    import torch

    from .models import new_controlnet

    model = new_controlnet(dit, dit.config.num_layers, inpaint=inpaint)
    if trained:
        generator = torch.Generator().manual_seed(SEED)
        layers = [(block, BLOCK_STD) for block in model.controlnet_blocks]
        with torch.no_grad():
            for layer, std in [*layers, (model.controlnet_x_embedder, EMBEDDER_STD)]:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
    return model


def _add_to_model_index(folder: Path) -> None:
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = "QwenImageControlNetPipeline"
    index["controlnet"] = ["diffusers", "QwenImageControlNetModel"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def build_tiny(folder: str | os.PathLike[str], inpaint: bool = False) -> Path:
    """Write the tiny Qwen-Image + ControlNet model into ``folder``; returns it."""
    from diffsynth_qwen_image.tiny import build_tiny as build_qwen
    from diffsynth_qwen_image.tiny import tiny_transformer

    from .files import CONTROLNET_SUBFOLDER

    folder = build_qwen(folder)
    controlnet = tiny_controlnet(tiny_transformer(), inpaint=inpaint)
    controlnet.save_pretrained(str(folder / CONTROLNET_SUBFOLDER), safe_serialization=True)
    _add_to_model_index(folder)
    return folder
