"""The ``qwen-image-controlnet`` family: Qwen-Image plus one or several ControlNets.

Import-light (no torch, no diffusers): ``diffsynth --help`` imports it through the plugin.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from diffsynth_core import ComponentFiles, FamilyOption, LoraLayout, ModelFamily

from .files import CONTROLNET_FILE, CONTROLNET_REPO

FAMILY = "qwen-image-controlnet"
BASE_FAMILY = "qwen-image"

OPTIONS = (
    FamilyOption(
        "controlnet",
        "str",
        help="ControlNet folder(s) (config.json + safetensors) or trained checkpoint file(s), "
        "comma-separated for several",
    ),
    FamilyOption(
        "control_image",
        "images",
        help="control image(s), comma-separated: one per ControlNet, or several for one Union ControlNet",
        command="generate",
    ),
    FamilyOption(
        "control_mask",
        "image",
        help="inpainting mask (white = repaint) for an inpainting ControlNet",
        command="generate",
    ),
    FamilyOption(
        "controlnet_scale",
        "str",
        "1.0",
        help="ControlNet strength, one value or one per control image (comma-separated)",
        command="generate",
    ),
    FamilyOption(
        "control_start",
        "str",
        "0.0",
        help="fraction of the denoising steps where control starts (one or one per image)",
        command="generate",
    ),
    FamilyOption(
        "control_end",
        "str",
        "1.0",
        help="fraction of the denoising steps where control ends (one or one per image)",
        command="generate",
    ),
    FamilyOption(
        "controlnet_layers",
        "int",
        help="train a new ControlNet made of the base DiT's first N blocks (zero-initialised "
        "control embedding) instead of loading one",
        command="train",
    ),
    FamilyOption(
        "controlnet_inpaint",
        "bool",
        False,
        help="with --controlnet-layers: an inpainting ControlNet (4 extra mask channels)",
        command="train",
    ),
)


# Where each trained model goes in a file (the core's formats apply it): a ControlNet LoRA
# keeps ``controlnet.`` in every prefixed format, never the DiT's prefixes: diffusers'
# pipeline loader would apply it to the DiT, whose first blocks have the same module names,
# silently. It loads with ``controlnet.load_lora_adapter(file, prefix="controlnet")``. A LoRA
# on the DiT (``--lora-base-model dit``) is ``transformer.`` / ComfyUI's ``diffusion_model.``.
LORA_LAYOUT = LoraLayout(
    components={"controlnet": "controlnet", "dit": "transformer"}, diffusion_model="dit"
)


def build_tiny(folder: Path) -> None:
    """Write the tiny preset (see :mod:`diffsynth_controlnet.tiny`)."""
    from .tiny import build_tiny as build

    build(folder)


def controlnet_family(base: ModelFamily | None = None) -> ModelFamily:
    """The family; its components are ``base``'s (Qwen-Image's) plus ``controlnet``."""
    from diffsynth_qwen_image.family import qwen_image_family

    base = base or qwen_image_family()
    files = dict(base.model_files)
    files["controlnet"] = ComponentFiles(CONTROLNET_REPO, CONTROLNET_FILE)
    defaults = dataclasses.replace(
        base.defaults,
        data_file_keys=("image", "control_image"),
        required_columns=("image", "prompt", "control_image"),
        # the ControlNet is what this family trains: all of it by default;
        # --lora-base-model controlnet (LoRA on it) or dit (LoRA on the DiT, ControlNet frozen)
        trainable_models="controlnet",
        lora_base_model="controlnet",
        remove_prefix_in_ckpt="pipe.controlnet.",
        export_prefix="controlnet",
        learning_rate=1e-5,
    )
    return ModelFamily(
        name=FAMILY,
        description="Qwen-Image with ControlNets (InstantX Union / inpainting; diffusers classes)",
        model_files=files,
        defaults=defaults,
        build_tiny=build_tiny,
        options=base.options + OPTIONS,
        base_family=BASE_FAMILY,
        loader="diffsynth_controlnet.loading:load_from_hook",
        blocks={**base.blocks, "controlnet": ("transformer_blocks",)},
        units="diffsynth_controlnet.units:control_units",
        lora_layout=LORA_LAYOUT,
        # the frozen Qwen-Image base as its family declares it; the ControlNet is trained
        high_precision_modules=base.high_precision_modules,
    )
