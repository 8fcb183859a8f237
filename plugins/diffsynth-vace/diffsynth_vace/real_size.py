"""Wan2.1 VACE at its real size, for ``diffsynth train --estimate-memory`` (``RealSize``).

The DiT is diffusers' ``WanVACETransformer3DModel``: its default config is the 14B release's
(dim 5120 = 40 heads x 128, 40 layers, ffn 13824, a VACE block beside every 5th layer:
17.3B parameters with them); the 1.3B release has dim 1536 (12 heads), ffn 8960, 30 layers
and a VACE block beside every 2nd (2.2B with them). The VAE is ``AutoencoderKLWan``'s
default (127M), the text encoder UMT5-XXL's encoder (5.7B). Built in a fake mode: no weight
is read; torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffsynth_core import RealSize, Shape

TEXT_TOKENS = 512  # Wan pads every prompt to 512 UMT5 tokens
CONTROL_CHANNELS = 96  # VACE context: 16 inactive + 16 reactive latent channels + 64 mask
FROZEN = {"text_encoder": 5.68e9, "vae": 0.127e9}  # UMT5-XXL encoder; the Wan VAE


def _latent(shape: Shape) -> tuple[int, int, int]:
    # the VAE: 4x in time (first frame alone), 8x in space
    frames = ((shape.num_frames or 1) - 1) // 4 + 1
    return frames, shape.height // 8, shape.width // 8


def builder(heads: int, ffn: int, every: int) -> Callable[[int], Any]:
    """``build(units)``: ``units`` x (``every`` main blocks and the VACE block beside the first)."""

    def build(units: int) -> Any:
        from diffusers import WanVACETransformer3DModel

        layers = units * every
        return WanVACETransformer3DModel(
            num_attention_heads=heads, ffn_dim=ffn, num_layers=layers,
            vace_layers=list(range(0, layers, every)),
        )  # fmt: skip

    return build


def dit_inputs(model: Any, shape: Shape, dtype: Any) -> dict[str, Any]:
    import torch

    frames, rows, cols = _latent(shape)
    batch = shape.batch_size
    return {
        "hidden_states": torch.randn(batch, 16, frames, rows, cols, dtype=dtype),
        "timestep": torch.ones(batch, dtype=dtype),
        "encoder_hidden_states": torch.randn(batch, TEXT_TOKENS, 4096, dtype=dtype),
        "control_hidden_states": torch.randn(
            batch, CONTROL_CHANNELS, frames, rows, cols, dtype=dtype
        ),
        "return_dict": False,
    }


def vae_encode(shape: Shape, dtype: Any) -> tuple[Any, Any]:
    import torch
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan().requires_grad_(False)
    video = torch.randn(
        shape.batch_size, 3, shape.num_frames or 1, shape.height, shape.width, dtype=dtype
    )
    return vae, lambda: vae.encode(video)


def attention_of(heads: int, layers: int) -> Callable[[Shape], tuple[int, int, int]]:
    def attention(shape: Shape) -> tuple[int, int, int]:
        frames, rows, cols = _latent(shape)
        return heads, frames * (rows // 2) * (cols // 2), layers

    return attention


def real_size(heads: int, ffn: int, layers: int, every: int, params: float, name: str) -> RealSize:
    return RealSize(
        build=builder(heads, ffn, every),
        inputs=dit_inputs,
        units=layers // every,
        blocks_per_unit=every + 1,
        views={"vace": "vace_blocks"},
        frozen=FROZEN,
        encode=vae_encode,
        attention=attention_of(heads, layers + layers // every),
        params=params,
        name=name,
    )


REAL_SIZE_14B = real_size(
    40, 13824, 40, 5, 17.34e9, "WanVACETransformer3DModel 14B (40 + 8 VACE blocks, 17.3B)"
)
REAL_SIZE_1_3B = real_size(
    12, 8960, 30, 2, 2.154e9, "WanVACETransformer3DModel 1.3B (30 + 15 VACE blocks, 2.2B)"
)
