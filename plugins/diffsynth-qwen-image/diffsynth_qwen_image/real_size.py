"""Qwen-Image at its real size, for ``diffsynth train --estimate-memory`` (``RealSize``).

The DiT is diffusers' ``QwenImageTransformer2DModel`` with its default config, which is the
released model's (60 blocks, 24 heads x 128, joint_attention_dim 3584: 20.4B parameters);
the VAE is ``AutoencoderKLQwenImage``'s default (127M). The estimate builds them in a fake
mode: no weight is read. torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from diffsynth_core import RealSize, Shape

TEXT_TOKENS = 512  # the family's max_sequence_length: the longest prompt it keeps
HEADS = 24


def build_dit(units: int) -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(num_layers=units)


def _grid(shape: Shape) -> tuple[int, int]:
    # VAE: 8x down, then 2x2 patches
    return shape.height // 16, shape.width // 16


def dit_inputs(model: Any, shape: Shape, dtype: Any) -> dict[str, Any]:
    import torch

    rows, cols = _grid(shape)
    batch = shape.batch_size
    return {
        "hidden_states": torch.randn(batch, rows * cols, 64, dtype=dtype),
        "encoder_hidden_states": torch.randn(batch, TEXT_TOKENS, 3584, dtype=dtype),
        "timestep": torch.ones(batch, dtype=dtype),
        "img_shapes": [[(1, rows, cols)]] * batch,
        "return_dict": False,
    }


def vae_encode(shape: Shape, dtype: Any) -> tuple[Any, Any]:
    import torch
    from diffusers import AutoencoderKLQwenImage

    vae = AutoencoderKLQwenImage().requires_grad_(False)
    pixels = torch.randn(shape.batch_size, 3, 1, shape.height, shape.width, dtype=dtype)
    return vae, lambda: vae.encode(pixels)


def attention(shape: Shape) -> tuple[int, int, int]:
    rows, cols = _grid(shape)
    return HEADS, rows * cols + TEXT_TOKENS, 60


REAL_SIZE = RealSize(
    build=build_dit,
    inputs=dit_inputs,
    units=60,
    frozen={"text_encoder": 8.29e9, "vae": 0.127e9},  # Qwen2.5-VL-7B-Instruct; the VAE
    encode=vae_encode,
    attention=attention,
    params=20.43e9,
    name="QwenImageTransformer2DModel (60 blocks, 20.4B)",
)
