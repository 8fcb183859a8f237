"""The ``flux-dev`` and ``flux-schnell`` families: declarations only (no torch, no diffusers).

Both are the official diffusers layout of ``black-forest-labs/FLUX.1-dev`` /
``FLUX.1-schnell``: ``transformer/`` (FluxTransformer2DModel), ``text_encoder/`` (CLIP-L),
``text_encoder_2/`` (T5-XXL), ``tokenizer/``, ``tokenizer_2/``, ``vae/`` (AutoencoderKL) and
``scheduler/``. They differ in what :class:`FluxVariant` records: dev is guidance-distilled
(the guidance scale is an input of the transformer) and reads up to 512 T5 tokens; schnell is
timestep-distilled for a few steps, has no guidance input and reads 256 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._core import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults

LORA_TARGETS = (
    "to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj,to_out.0,to_add_out,"
    "ff.net.0.proj,ff.net.2,ff_context.net.0.proj,ff_context.net.2,proj_mlp,proj_out"
)


@dataclass(frozen=True)
class FluxVariant:
    """What tells FLUX.1 dev from schnell (diffusers' FluxPipeline defaults)."""

    family: str
    repo: str
    guidance_embeds: bool
    max_sequence_length: int
    num_inference_steps: int
    description: str


DEV = FluxVariant(
    "flux-dev", "black-forest-labs/FLUX.1-dev", True, 512, 28,
    "FLUX.1 [dev] 12B guidance-distilled text-to-image (diffusers classes; LoRA or full training)",
)  # fmt: skip
SCHNELL = FluxVariant(
    "flux-schnell", "black-forest-labs/FLUX.1-schnell", False, 256, 4,
    "FLUX.1 [schnell] 12B few-step text-to-image (diffusers classes; LoRA or full training)",
)  # fmt: skip
VARIANTS = {v.family: v for v in (DEV, SCHNELL)}

# the folders of the official layout, by our component name
COMPONENT_FOLDERS = {
    "dit": "transformer",
    "text_encoder": "text_encoder",
    "text_encoder_2": "text_encoder_2",
    "vae": "vae",
    "tokenizer": "tokenizer",
    "tokenizer_2": "tokenizer_2",
}


def model_files(repo: str) -> dict[str, ComponentFiles]:
    return {
        "dit": ComponentFiles(repo, "transformer/diffusion_pytorch_model*.safetensors"),
        "text_encoder": ComponentFiles(repo, "text_encoder/model*.safetensors"),
        "text_encoder_2": ComponentFiles(repo, "text_encoder_2/model*.safetensors"),
        "vae": ComponentFiles(repo, "vae/diffusion_pytorch_model.safetensors"),
        "tokenizer": ComponentFiles(repo, "tokenizer/"),
        "tokenizer_2": ComponentFiles(repo, "tokenizer_2/"),
    }


def _options(variant: FluxVariant) -> tuple[FamilyOption, ...]:
    options = [
        FamilyOption(
            "max_sequence_length",
            "int",
            variant.max_sequence_length,
            help=f"T5 prompt tokens (the prompt is padded to this; at most {variant.max_sequence_length})",
        ),
        FamilyOption(
            "input_image", "image", help="start from this image (img2img)", command="generate"
        ),
        FamilyOption(
            "denoising_strength",
            "float",
            1.0,
            help="img2img strength: 1 ignores the input image",
            command="generate",
        ),
    ]
    if variant.guidance_embeds:
        options.insert(
            0,
            FamilyOption(
                "guidance_scale",
                "float",
                3.5,
                help="embedded guidance of FLUX.1 [dev] (an input of the transformer, not CFG)",
            ),
        )
    return tuple(options)


def build_tiny(folder: Path) -> None:
    """Write the tiny preset into ``folder`` (see :mod:`diffsynth_flux.tiny`)."""
    from .tiny import build_tiny as build

    build(folder)


def build_tiny_schnell(folder: Path) -> None:
    from .tiny import build_tiny as build

    build(folder, variant="flux-schnell")


def flux_family(variant: FluxVariant) -> ModelFamily:
    """One FLUX.1 family: official files, training defaults, tiny preset, flags."""
    return ModelFamily(
        name=variant.family,
        description=variant.description,
        model_files=model_files(variant.repo),
        defaults=TrainingDefaults(
            lora_base_model="dit",
            lora_target_modules=LORA_TARGETS,
            lora_rank=16,
            learning_rate=1e-4,
            max_pixels=1024 * 1024,
            division_factor=16,
            data_file_keys=("image",),
            required_columns=("image", "prompt"),
            remove_prefix_in_ckpt="pipe.dit.",
            export_prefix="transformer",
            gradient_checkpointing=True,
            sample_height=1024,
            sample_width=1024,
        ),
        build_tiny=build_tiny if variant.guidance_embeds else build_tiny_schnell,
        options=_options(variant),
        loader="diffsynth_flux.loading:load_family_pipeline",
        blocks={"dit": ("transformer_blocks", "single_transformer_blocks")},
        # --base-precision: what lies outside the blocks stays in the run's precision; CLIP is
        # small and stays, T5 is quantized whole
        high_precision_modules={
            "dit": ("x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out"),
            "text_encoder_2": (),
        },
        real_size=f"diffsynth_flux.real_size:REAL_SIZE_{'DEV' if variant is DEV else 'SCHNELL'}",
        lora_layout="diffsynth_flux.comfyui:FLUX_LAYOUT",
        aliases=("flux",) if variant is DEV else (),  # "FLUX" means dev to most users
    )


def families() -> list[ModelFamily]:
    return [flux_family(DEV), flux_family(SCHNELL)]
