"""VACE conditioning: control video, mask and reference images -> the 96-channel VACE context.

Mirrors diffusers' ``WanVACEPipeline.preprocess_conditions``, ``prepare_video_latents`` and
``prepare_masks`` (0.42), generalised to a batch of clips:

* pixels are in [-1, 1] (B, 3, T, H, W); the mask in [0, 1] (B, C, T, H, W), 1 = generate;
* the video is split by the *binarised* mask into ``inactive = video * (1 - mask)`` (kept) and
  ``reactive = video * mask`` (to generate); each is VAE-encoded (distribution mode) and
  normalised with ``latents_mean`` / ``latents_std`` -> 16 + 16 channels;
* the (unbinarised) mask's first channel is pixel-unshuffled 8x8 into 64 channels and resampled
  to the latent frame count with ``nearest-exact``;
* every reference image is fitted, centred, on a white canvas of the video size, encoded as a
  one-frame clip and prepended in time with zeros for its reactive half and for its mask (the
  later reference ends up first, as in diffusers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

SPATIAL = 8  # Wan VAE: 8x spatial, 4x temporal compression
TEMPORAL = 4
PATCH = 2  # the DiT's spatial patch (patch_size (1, 2, 2) in every Wan2.1 release)


def latent_stats(vae: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``latents_mean`` and ``1 / latents_std`` shaped (1, z, 1, 1, 1), in float32."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=device, dtype=torch.float32).view(
        1, z, 1, 1, 1
    )
    inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=device, dtype=torch.float32).view(
        1, z, 1, 1, 1
    )
    return mean, inv_std


def encode_latents(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, T, H, W) in [-1, 1] -> normalised latents in the VAE's dtype."""
    mean, inv_std = latent_stats(vae, pixels.device)
    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
    return ((latents.float() - mean) * inv_std).to(vae.dtype)


def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> pixels (B, 3, T, H, W) in about [-1, 1].

    The statistics are cast to the VAE's dtype before the reciprocal, in diffusers' order, so
    that bf16 decodes round alike too."""
    z = vae.config.z_dim
    latents = latents.to(vae.dtype)
    mean = (
        torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    )
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(
        latents.device, latents.dtype
    )
    return vae.decode(latents / inv_std + mean, return_dict=False)[0]


def video_latents(
    vae: Any, video: torch.Tensor, mask: torch.Tensor, cache: dict[Any, torch.Tensor] | None = None
) -> torch.Tensor:
    """Inactive and reactive latents, concatenated on channels: (B, 2z, T', h, w).

    Without a control video both halves are the encoding of zeros: it is computed once and,
    with ``cache``, once per shape (a plain text-to-video run would otherwise pay two VAE
    passes per step for a constant).
    """
    mask = torch.where(mask > 0.5, 1.0, 0.0).to(vae.dtype)
    video = video.to(vae.dtype)
    if not video.any():
        key = (tuple(video.shape), video.dtype, video.device)
        zero = cache.get(key) if cache is not None else None
        if zero is None:
            zero = encode_latents(vae, video)
            if cache is not None:
                cache[key] = zero
        return torch.cat([zero, zero], dim=1)
    inactive = encode_latents(vae, video * (1 - mask))
    reactive = encode_latents(vae, video * mask)
    return torch.cat([inactive, reactive], dim=1)


def mask_latents(mask: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """The mask's first channel, 8x8 pixel-unshuffled to 64 channels, at the latent frame rate."""
    batch, _, frames, height, width = mask.shape
    new_frames = (frames + TEMPORAL - 1) // TEMPORAL
    new_h = height // (SPATIAL * patch) * patch
    new_w = width // (SPATIAL * patch) * patch
    m = mask[:, 0].reshape(batch, frames, new_h, SPATIAL, new_w, SPATIAL)
    m = m.permute(0, 3, 5, 1, 2, 4).flatten(1, 2)  # (B, 64, T, h, w), channel = dy * 8 + dx
    return F.interpolate(m, size=(new_frames, new_h, new_w), mode="nearest-exact")


def reference_latents(vae: Any, references: torch.Tensor) -> torch.Tensor:
    """Reference canvases (B, R, 3, H, W) -> (B, 2z, R, h, w), the last reference first."""
    frames = [encode_latents(vae, references[:, r, :, None]) for r in range(references.shape[1])]
    latent = torch.cat(frames[::-1], dim=2)
    return torch.cat([latent, torch.zeros_like(latent)], dim=1)


def vace_context(
    vae: Any,
    video: torch.Tensor,
    mask: torch.Tensor,
    references: torch.Tensor | None,
    patch: int = 2,
    cache: dict[Any, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The DiT's ``control_hidden_states``: (B, 96, R + T', h, w) for the real z_dim 16."""
    latents = video_latents(vae, video, mask, cache)
    masks = mask_latents(mask, patch).to(latents.dtype)
    if references is not None and references.shape[1] > 0:
        ref = reference_latents(vae, references)
        latents = torch.cat([ref, latents], dim=2)
        masks = torch.cat(
            [masks.new_zeros(*masks.shape[:2], ref.shape[2], *masks.shape[3:]), masks], dim=2
        )
    return torch.cat([latents, masks], dim=1)


def fit_on_canvas(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (3, h, w) image in [-1, 1], scaled to fit (bilinear) and centred on white (1.0)."""
    img_h, img_w = image.shape[-2:]
    scale = min(height / img_h, width / img_w)
    new_h, new_w = int(img_h * scale), int(img_w * scale)
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[
        0
    ]
    canvas = torch.ones(3, height, width, device=image.device, dtype=image.dtype)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[:, top : top + new_h, left : left + new_w] = resized
    return canvas


def normalize_references(value: Any, batch: int) -> list[list[Any]]:
    """None, an image, a list of images, or one list per clip -> one list per clip."""
    if value is None:
        return [[] for _ in range(batch)]
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return [[value] for _ in range(batch)]
    if value and all(isinstance(v, Sequence) and not isinstance(v, (str, bytes)) for v in value):
        return [[im for im in refs if im is not None] for refs in value]
    return [[im for im in value if im is not None] for _ in range(batch)]
