"""FLUX.1 at its real size, for ``diffsynth train --estimate-memory`` (``RealSize``).

The DiT is diffusers' ``FluxTransformer2DModel`` with its default config, the released one:
19 double-stream and 38 single-stream blocks of width 3072 (24 heads x 128), 11.9B parameters
with dev's guidance embedding. The estimate builds it in units of one double block and two
single blocks. The VAE is FLUX's AutoencoderKL (16 latent channels, 84M); the text encoders
T5-XXL's encoder (4.76B) and CLIP-L's text model (123M). Nothing is read: a fake mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._core import RealSize, Shape
from .family import DEV, SCHNELL, FluxVariant

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False,
)  # fmt: skip


def _tokens(shape: Shape) -> int:
    return (shape.height // 16) * (shape.width // 16)


def builder(variant: FluxVariant) -> Callable[[int], Any]:
    def build(units: int) -> Any:
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel(
            num_layers=units, num_single_layers=2 * units, guidance_embeds=variant.guidance_embeds
        )

    return build


def inputs_of(variant: FluxVariant) -> Callable[..., dict[str, Any]]:
    def inputs(model: Any, shape: Shape, dtype: Any) -> dict[str, Any]:
        import torch

        batch, tokens, text = shape.batch_size, _tokens(shape), variant.max_sequence_length
        values = {
            "hidden_states": torch.randn(batch, tokens, 64, dtype=dtype),
            "encoder_hidden_states": torch.randn(batch, text, 4096, dtype=dtype),
            "pooled_projections": torch.randn(batch, 768, dtype=dtype),
            "timestep": torch.ones(batch, dtype=dtype),
            "img_ids": torch.zeros(tokens, 3, dtype=dtype),
            "txt_ids": torch.zeros(text, 3, dtype=dtype),
            "return_dict": False,
        }
        if variant.guidance_embeds:
            values["guidance"] = torch.ones(batch, dtype=dtype)
        return values

    return inputs


def vae_encode(shape: Shape, dtype: Any) -> tuple[Any, Any]:
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG).requires_grad_(False)
    pixels = torch.randn(shape.batch_size, 3, shape.height, shape.width, dtype=dtype)
    return vae, lambda: vae.encode(pixels)


def attention_of(variant: FluxVariant) -> Callable[[Shape], tuple[int, int, int]]:
    def attention(shape: Shape) -> tuple[int, int, int]:
        return 24, _tokens(shape) + variant.max_sequence_length, 57

    return attention


def real_size(variant: FluxVariant) -> RealSize:
    return RealSize(
        build=builder(variant),
        inputs=inputs_of(variant),
        units=19,
        blocks_per_unit=3,
        frozen={"text_encoder": 0.123e9, "text_encoder_2": 4.76e9, "vae": 0.084e9},
        encode=vae_encode,
        attention=attention_of(variant),
        params=11.90e9 if variant.guidance_embeds else 11.89e9,
        name="FluxTransformer2DModel (19 double + 38 single blocks, 11.9B)",
    )


REAL_SIZE_DEV = real_size(DEV)
REAL_SIZE_SCHNELL = real_size(SCHNELL)
