"""Latent layout helpers shared by the units, ``model_fn`` and the decoder.

Our pipeline keeps latents as an image grid ``(B, 16, H/8, W/8)`` (what the loss and the
scheduler see). The DiT wants 2x2 patches packed into 64-channel tokens ``(B, H/16 * W/16,
64)``, and the VAE is a video VAE with a frame axis ``(B, 16, 1, H/8, W/8)``. These functions
convert between the three exactly as diffusers' ``QwenImagePipeline`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # diffusers is untyped: the name is Any to a type checker
    from diffusers import AutoencoderKLQwenImage

VAE_SCALE = 8  # pixels per latent (2 ** len(temperal_downsample))
PATCH = 2  # latents per token side


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


def token_shape(latents: torch.Tensor) -> tuple[int, int, int]:
    """The ``(frames, rows, cols)`` entry of ``img_shapes`` for one latent grid."""
    return 1, latents.shape[-2] // PATCH, latents.shape[-1] // PATCH


def img_shapes_for(
    latents: torch.Tensor, extra: Sequence[torch.Tensor] = ()
) -> list[list[tuple[int, int, int]]]:
    """``img_shapes`` for the DiT: the target grid, then any extra (edit) grids, per sample."""
    shapes = [token_shape(latents), *(token_shape(e) for e in extra)]
    return [list(shapes) for _ in range(latents.shape[0])]


def as_latent_grid(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Accept user latents as a grid, a grid with a frame axis, or packed tokens."""
    h, w = latent_size(height, width)
    if latents.ndim == 5:  # (B, C, 1, h, w): the VAE's layout
        latents = latents[:, :, 0]
    if latents.ndim == 3:  # (B, tokens, 64): diffusers' packed layout
        latents = unpack_latents(latents, h, w)
    if latents.ndim != 4 or tuple(latents.shape[-2:]) != (h, w):
        raise ValueError(
            f"latents of shape {tuple(latents.shape)} do not fit a {height}x{width} image "
            f"(expected (B, 16, {h}, {w}), (B, 16, 1, {h}, {w}) or (B, {h * w // 4}, 64))"
        )
    return latents


def vae_stats(vae: AutoencoderKLQwenImage, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel latent mean and std, shaped to broadcast over ``(B, C, T, h, w)``."""
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
    return mean.to(like.device, like.dtype), std.to(like.device, like.dtype)


def normalize(latents: torch.Tensor, vae: AutoencoderKLQwenImage) -> torch.Tensor:
    """VAE latents ``(B, C, 1, h, w)`` -> the DiT's normalised grid ``(B, C, h, w)``."""
    mean, std = vae_stats(vae, latents)
    return ((latents - mean) / std)[:, :, 0]


def denormalize(latents: torch.Tensor, vae: AutoencoderKLQwenImage) -> torch.Tensor:
    """The DiT's grid ``(B, C, h, w)`` -> VAE latents ``(B, C, 1, h, w)``."""
    latents = latents[:, :, None]
    mean, std = vae_stats(vae, latents)
    # written as diffusers writes it (divide by 1/std) so the decode matches bit for bit
    return latents / (1.0 / std) + mean
