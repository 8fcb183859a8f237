"""The ``wan-vace`` and ``wan-vace-14b`` families of Wan2.1 VACE (registered by
:mod:`diffsynth_vace.plugin`).

Importing this module must stay cheap (``diffsynth --help`` imports every plugin): the families name their
loader and LoRA layout as ``"module:attribute"``, imported by the core on first use; torch and
diffusers are imported only there and in the tiny builder.
"""

from __future__ import annotations

from pathlib import Path

from diffsynth_core import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults

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


LOADER = "diffsynth_vace.pipeline:WanVacePipeline.from_model_configs"
LORA_LAYOUT = "diffsynth_vace.formats:WAN_LAYOUT"
# forward runs the VACE blocks beside the main ones (a hint every few layers); the VACE
# branch's pipeline model is a view of the same lists
BLOCKS = {"dit": ("blocks", "vace_blocks"), "vace": ("vace_blocks",)}
# --base-precision: the DiT's timestep/text embedding and final projection stay in the run's
# precision; a fully trained VACE branch (--trainable-models vace) stays as it is too
HIGH_PRECISION = {"dit": ("condition_embedder", "proj_out"), "text_encoder": ()}


def _family(name: str, description: str, repo: str, real_size: str) -> ModelFamily:
    """One VACE family: the sizes differ only in their files and their real size."""
    return ModelFamily(
        name=name,
        description=description,
        model_files=model_files(repo),
        defaults=DEFAULTS,
        real_size=f"diffsynth_vace.real_size:{real_size}",
        build_tiny=_build_tiny,
        options=OPTIONS,
        loader=LOADER,
        blocks=BLOCKS,
        high_precision_modules=HIGH_PRECISION,
        lora_layout=LORA_LAYOUT,
    )


FAMILIES = (
    _family("wan-vace", "Wan2.1 VACE 1.3B: text/video-conditioned video generation and editing",
            REPO_1_3B, "REAL_SIZE_1_3B"),
    _family("wan-vace-14b", "Wan2.1 VACE 14B: the same architecture, 40 layers of width 5120",
            REPO_14B, "REAL_SIZE_14B"),
)  # fmt: skip
