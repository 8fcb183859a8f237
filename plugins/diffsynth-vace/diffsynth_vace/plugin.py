"""The diffsynth plugin of Wan2.1 VACE: the ``wan-vace`` and ``wan-vace-14b`` families.

Entry point ``wan-vace = "diffsynth_vace.plugin"`` in the group ``diffsynth``. Importing this
module must stay cheap (``diffsynth --help`` imports every plugin): torch and diffusers are
imported only inside :func:`diffsynth_load_pipeline` and the tiny builder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from diffsynth_core import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults, hookimpl

REPO_1_3B = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
REPO_14B = "Wan-AI/Wan2.1-VACE-14B-diffusers"

# diffusers' names for the attention and FFN projections of every Wan block (DiffSynth-Studio
# calls them q, k, v, o, ffn.0, ffn.2). On ``dit`` they match the main blocks and the VACE
# blocks alike; on ``vace`` (the VACE blocks only) they match the VACE blocks.
LORA_TARGETS = "to_q,to_k,to_v,to_out.0,ffn.net.0.proj,ffn.net.2"
DATA_FILE_KEYS = ("video", "vace_video", "vace_video_mask", "vace_reference_image")


def model_files(repo: str) -> dict[str, ComponentFiles]:
    """The components of an official ``*-diffusers`` repository, by our component names."""
    return {
        "dit": ComponentFiles(repo, "transformer/diffusion_pytorch_model*.safetensors"),
        "text_encoder": ComponentFiles(repo, "text_encoder/model*.safetensors"),
        "vae": ComponentFiles(repo, "vae/diffusion_pytorch_model*.safetensors"),
        "tokenizer": ComponentFiles(repo, "tokenizer/"),
    }


DEFAULTS = TrainingDefaults(
    lora_base_model="dit",
    lora_target_modules=LORA_TARGETS,
    lora_rank=32,
    learning_rate=1e-4,
    max_pixels=480 * 832,
    division_factor=16,
    num_frames=81,
    data_file_keys=DATA_FILE_KEYS,
    required_columns=("video", "prompt"),
    remove_prefix_in_ckpt="pipe.dit.",
    export_prefix="transformer",
    gradient_checkpointing=True,
    sample_height=480,
    sample_width=832,
)

OPTIONS = (
    FamilyOption(
        "vace_video",
        "video",
        None,
        "control video (depth, pose, edges, masked frames ...)",
        "generate",
    ),
    FamilyOption(
        "vace_video_mask", "video", None, "mask video: white = generate, black = keep", "generate"
    ),
    FamilyOption(
        "vace_reference_image", "images", None, "reference image(s), comma separated", "generate"
    ),
    # generate only: training takes --num-frames from the core (it cuts the clips it loads)
    FamilyOption(
        "num_frames", "int", 81, "frames to generate, 4k+1 (81 = 5 s at 16 fps)", "generate"
    ),
    FamilyOption("vace_scale", "float", 1.0, "strength of the VACE conditioning", "generate"),
    FamilyOption(
        "flow_shift", "float", None, "sampler shift: 3 for 480p (default), 5 for 720p", "generate"
    ),
)


def _build_tiny(folder: Path) -> None:
    from .tiny import build_tiny

    build_tiny(folder)


FAMILIES = (
    ModelFamily(
        name="wan-vace",
        description="Wan2.1 VACE 1.3B: text/video-conditioned video generation and editing",
        model_files=model_files(REPO_1_3B),
        defaults=DEFAULTS,
        build_tiny=_build_tiny,
        options=OPTIONS,
    ),
    ModelFamily(
        name="wan-vace-14b",
        description="Wan2.1 VACE 14B: the same architecture, 40 layers of width 5120",
        model_files=model_files(REPO_14B),
        defaults=DEFAULTS,
        build_tiny=_build_tiny,
        options=OPTIONS,
    ),
)
FAMILY_NAMES = frozenset(f.name for f in FAMILIES)


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    for family in FAMILIES:
        register(family)


@hookimpl
def diffsynth_load_pipeline(
    family: ModelFamily, model_configs: Mapping[str, Any], device: str, torch_dtype: Any
) -> Any:
    if family.name not in FAMILY_NAMES:
        return None
    from .pipeline import WanVacePipeline

    return WanVacePipeline.from_model_configs(model_configs, device=device, torch_dtype=torch_dtype)


@hookimpl
def diffsynth_convert_state_dict(
    state_dict: dict[str, Any], format: str, family: ModelFamily | None, kind: str
) -> dict[str, Any] | None:
    """``--lora-format wan`` and ``comfyui``: the original Wan names (ComfyUI's Wan models, the
    Wan code, DiffSynth-Studio); diffusers' names under ``diffusion_model.`` load nowhere."""
    from .formats import WAN_FORMATS, convert

    if format not in WAN_FORMATS or family is None or family.name not in FAMILY_NAMES:
        return None

    return convert(state_dict, kind)


@hookimpl
def diffsynth_import_lora(
    state_dict: dict[str, Any], family: ModelFamily | None, model: Any
) -> dict[str, Any] | None:
    """Read LoRA files in the original Wan names (``--lora-format wan`` / ``comfyui``, ComfyUI,
    the Wan code, kohya / musubi-tuner ``lora_unet_blocks_0_self_attn_q``)."""
    if family is None or family.name not in FAMILY_NAMES:
        return None
    from .formats import from_wan_lora

    return from_wan_lora(state_dict, (n for n, _ in model.named_modules()))
