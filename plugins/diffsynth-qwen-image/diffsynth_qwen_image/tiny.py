"""The ``tiny`` preset: the real Qwen-Image classes with a tiny config, written offline.

``build_tiny(folder)`` writes a complete model in the official repository layout
(``transformer/``, ``text_encoder/``, ``vae/``, ``tokenizer/``, ``scheduler/`` and
``model_index.json``), so both our loader and diffusers' ``QwenImagePipeline.from_pretrained``
read it exactly as they read ``Qwen/Qwen-Image``. Weights are random but seeded: two builds are
identical. It takes a few seconds and about 12 MB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The official scheduler/scheduler_config.json of Qwen/Qwen-Image (the loader falls back to
# these values when a copy of the repository lacks the file).
SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

# Per-channel statistics of the real Qwen-Image VAE latents: kept so normalisation is exercised.
LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]  # fmt: skip

TINY_DIT = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=2,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=64,
    axes_dims_rope=(8, 12, 12),
)
TINY_VAE = dict(
    base_dim=16,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    latents_mean=LATENTS_MEAN,
    latents_std=LATENTS_STD,
)


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_transformer() -> Any:
    from diffusers import QwenImageTransformer2DModel

    _seeded(0)
    return QwenImageTransformer2DModel(**TINY_DIT)


def tiny_vae() -> Any:
    from diffusers import AutoencoderKLQwenImage

    _seeded(1)
    return AutoencoderKLQwenImage(**TINY_VAE)


def tiny_text_encoder(tokenizer: Any) -> Any:
    """Qwen2.5-VL with a 2-layer text model and a 1-block vision tower (for Qwen-Image-Edit)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(
        vocab_size=(len(tokenizer) + 63) // 64 * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
    )
    vision_config = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        fullatt_block_indexes=[0],
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    _seeded(2)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)


def build_tiny(folder: str | os.PathLike[str]) -> Path:
    """Write the tiny Qwen-Image model into ``folder`` in the official layout; returns it."""
    from diffusers import QwenImagePipeline

    from .tiny_tokenizer import build_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    pipe = QwenImagePipeline(
        scheduler=tiny_scheduler(),
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        transformer=tiny_transformer(),
    )
    # diffusers' own writer gives exactly the layout (and model_index.json) it reads back
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
