"""Latent layout helpers: the image grid, Flux's packed tokens, their positions, the VAE scale.

Our pipeline keeps latents as an image grid ``(B, 16, H/8, W/8)`` (what the loss and the
scheduler see). The transformer wants 2x2 patches packed into 64-channel tokens ``(B, H/16 *
W/16, 64)`` with one position ``(0, row, col)`` per token (``img_ids``; the prompt tokens sit
at ``(0, 0, 0)``, ``txt_ids``). The VAE latents are normalised as ``(z - shift) * scale``
(0.1159 and 0.3611 for FLUX.1). All of it as diffusers' ``FluxPipeline`` does it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # diffusers is untyped: the name is Any to a type checker
    from diffusers import AutoencoderKL

VAE_SCALE = 8  # pixels per latent (2 ** (len(block_out_channels) - 1))
PATCH = 2  # latents per token side
CHANNELS = 16


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h/2 * w/2, 4C)``, channel-major inside each token."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // PATCH, PATCH, w // PATCH, PATCH)
    x = x.permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, h/2 * w/2, 4C)`` -> ``(B, C, h, w)`` (the inverse of :func:`pack_latents`)."""
    b, _, channels = tokens.shape
    x = tokens.view(b, h // PATCH, w // PATCH, channels // 4, PATCH, PATCH)
    x = x.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels // 4, h, w)


def latent_size(height: int, width: int) -> tuple[int, int]:
    """Latent grid of an image of ``height x width`` pixels (as diffusers rounds it)."""
    step = VAE_SCALE * PATCH
    return PATCH * (height // step), PATCH * (width // step)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(h/2 * w/2, 3)`` token positions ``(0, row, col)`` for a latent grid of ``h x w``."""
    ids = torch.zeros(h // PATCH, w // PATCH, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h // PATCH)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // PATCH)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def text_ids(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(L, 3)`` zeros: FLUX.1 puts every prompt token at position 0."""
    return torch.zeros(length, 3, device=device, dtype=dtype)


def as_latent_grid(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Accept user latents as a grid ``(B, 16, h, w)`` or diffusers' packed tokens."""
    h, w = latent_size(height, width)
    if latents.ndim == 3:  # (B, tokens, 64): diffusers' packed layout
        latents = unpack_latents(latents, h, w)
    if latents.ndim != 4 or tuple(latents.shape[-2:]) != (h, w):
        raise ValueError(
            f"latents of shape {tuple(latents.shape)} do not fit a {height}x{width} image "
            f"(expected (B, 16, {h}, {w}) or (B, {h * w // 4}, 64))"
        )
    return latents


def normalize(latents: torch.Tensor, vae: AutoencoderKL) -> torch.Tensor:
    """VAE latents -> the transformer's scale."""
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def denormalize(latents: torch.Tensor, vae: AutoencoderKL) -> torch.Tensor:
    """The transformer's scale -> VAE latents (written as diffusers writes it)."""
    return (latents / vae.config.scaling_factor) + vae.config.shift_factor
