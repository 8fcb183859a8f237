"""The ``tiny`` presets: the real FLUX.1 classes with tiny configs, written offline.

``build_tiny(folder, variant)`` writes a complete model in the official repository layout
(``transformer/``, ``text_encoder/``, ``text_encoder_2/``, ``tokenizer/``, ``tokenizer_2/``,
``vae/``, ``scheduler/`` and ``model_index.json``) with diffusers' own ``save_pretrained``, so
both our loader and diffusers' ``FluxPipeline.from_pretrained`` read it exactly as they read
``black-forest-labs/FLUX.1-dev``. Weights are random but seeded: two builds are identical.
The dev preset has the guidance embedding, the schnell one has not; both take about a second
and under 5 MB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The official scheduler/scheduler_config.json of each repository (the loader falls back to
# these values when a copy of the repository lacks the file).
_SCHEDULER_BASE: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
}
SCHEDULER_CONFIGS: dict[str, dict[str, Any]] = {
    "flux-dev": {**_SCHEDULER_BASE, "shift": 3.0, "use_dynamic_shifting": True},
    "flux-schnell": {**_SCHEDULER_BASE, "shift": 1.0, "use_dynamic_shifting": False},
}

TEXT_DIM = 32  # CLIP width (pooled projection) and T5 d_model (joint attention dim)
TINY_DIT = dict(
    patch_size=1,
    in_channels=64,
    num_layers=2,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=TEXT_DIM,
    pooled_projection_dim=TEXT_DIM,
    axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim, as (16, 56, 56) sums to 128
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 16, 16, 16],
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=16,
    sample_size=64,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


def scheduler_config(variant: str) -> dict[str, Any]:
    return dict(SCHEDULER_CONFIGS[variant])


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_transformer(guidance_embeds: bool = True) -> Any:
    from diffusers import FluxTransformer2DModel

    _seeded(0)
    return FluxTransformer2DModel(**TINY_DIT, guidance_embeds=guidance_embeds)


def tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    _seeded(1)
    return AutoencoderKL(**TINY_VAE)


def tiny_clip(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
        projection_dim=TEXT_DIM, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    _seeded(2)
    return CLIPTextModel(config).eval()


def tiny_t5(tokenizer: Any) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    _seeded(3)
    return T5EncoderModel(config).eval()


def tiny_scheduler(variant: str) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config(variant))


def build_tiny(folder: str | os.PathLike[str], variant: str = "flux-dev") -> Path:
    """Write the tiny FLUX.1 model into ``folder`` in the official layout; returns it."""
    from diffusers import FluxPipeline

    from .tiny_tokenizer import build_clip_tokenizer, build_t5_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip_tokenizer, t5_tokenizer = build_clip_tokenizer(), build_t5_tokenizer()
    pipe = FluxPipeline(
        scheduler=tiny_scheduler(variant),
        vae=tiny_vae(),
        text_encoder=tiny_clip(clip_tokenizer),
        tokenizer=clip_tokenizer,
        text_encoder_2=tiny_t5(t5_tokenizer),
        tokenizer_2=t5_tokenizer,
        transformer=tiny_transformer(guidance_embeds=variant == "flux-dev"),
    )
    # diffusers' own writer gives exactly the layout (and model_index.json) it reads back
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
