"""The ``qwen-image`` family (registered by :mod:`diffsynth_qwen_image.plugin`).

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers: the family
names its loader as ``"module:function"``, imported by the core when a pipeline is loaded.
"""

from __future__ import annotations

from pathlib import Path

from diffsynth_core import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults

FAMILY = "qwen-image"
REPO = "Qwen/Qwen-Image"

LORA_TARGETS = (
    "to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj,to_out.0,to_add_out,"
    "img_mlp.net.2,img_mod.1,txt_mlp.net.2,txt_mod.1"
)

# --base-precision: the DiT's layers kept in the run's precision are those outside the blocks
# (input projections, timestep embedding, final norm and projection: 40M, 0.2% of its weights);
# the blocks' modulation (img_mod, txt_mod: 6.8B of 20.4B) is quantized, as in the fp8 files
# users run. The text encoder is quantized whole (its embeddings are no linear layer).
HIGH_PRECISION = {
    "dit": ("img_in", "txt_in", "time_text_embed", "norm_out", "proj_out"),
    "text_encoder": (),
}


def build_tiny(folder: Path) -> None:
    """Write the tiny preset into ``folder`` (see :mod:`diffsynth_qwen_image.tiny`)."""
    from .tiny import build_tiny as build

    build(folder)


def qwen_image_family() -> ModelFamily:
    """The ``qwen-image`` family: official files, training defaults, tiny preset, flags."""
    return ModelFamily(
        name=FAMILY,
        description="Qwen-Image 20B MMDiT text-to-image (diffusers classes; LoRA or full training)",
        model_files={
            "dit": ComponentFiles(REPO, "transformer/diffusion_pytorch_model*.safetensors"),
            "text_encoder": ComponentFiles(REPO, "text_encoder/model*.safetensors"),
            "vae": ComponentFiles(REPO, "vae/diffusion_pytorch_model.safetensors"),
            "tokenizer": ComponentFiles(REPO, "tokenizer/"),
        },
        defaults=TrainingDefaults(
            lora_base_model="dit",
            lora_target_modules=LORA_TARGETS,
            lora_rank=32,
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
        build_tiny=build_tiny,
        loader="diffsynth_qwen_image.pipeline:load_qwen_image_pipeline",
        blocks={"dit": ("transformer_blocks",)},
        high_precision_modules=HIGH_PRECISION,
        real_size="diffsynth_qwen_image.real_size:REAL_SIZE",
        options=(
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
            FamilyOption(
                "max_sequence_length", "int", 512, help="prompt tokens kept (at most 1024)"
            ),
        ),
    )
