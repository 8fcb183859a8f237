"""Clips in and out of the pipeline: PIL frame lists <-> tensors, and writing an mp4.

Decoding files is the core data package's job (``diffsynth_core.data.video``); this module
only converts frames that are already loaded. Pixels go through diffusers' ``VideoProcessor``
(the one ``WanVACEPipeline`` uses) so that resizing and normalisation are bit-identical to it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffsynth_core import ConfigError

Clip = Sequence[Image.Image]


def is_clip(value: Any) -> bool:
    """A non-empty sequence of PIL images (one clip's frames)."""
    return (
        isinstance(value, Sequence)
        and len(value) > 0
        and all(isinstance(f, Image.Image) for f in value)
    )


def per_clip(value: Any, batch_size: int) -> list[Any]:
    """None, one clip, a 5D tensor, or one entry (clip or None) per sample -> one per sample."""
    if value is None:
        return [None] * batch_size
    if isinstance(value, torch.Tensor):
        return list(value) if value.ndim == 5 else [value] * batch_size
    if is_clip(value):
        return [value] * batch_size  # one clip for the whole batch
    items = list(value)
    if len(items) != batch_size:
        raise ValueError(f"expected {batch_size} clips (one per sample), got {len(items)}")
    return items


def clip_to_tensor(processor: Any, clip: Any, height: int, width: int, frames: int) -> torch.Tensor:
    """The first ``frames`` frames of a clip -> (C, T, H, W) float32 in [-1, 1] (C = 1 for
    greyscale "L" masks). A control clip may be longer than the video (a file read whole);
    a shorter one cannot be lined up with it."""
    available = clip.shape[1] if isinstance(clip, torch.Tensor) else len(clip)
    if available < frames:
        raise ConfigError(
            f"a control clip has {available} frames but the video has {frames}; give one at least as long (or fewer --num-frames)"
        )
    if isinstance(clip, torch.Tensor):
        return clip[:, :frames].float()
    return processor.preprocess_video(list(clip)[:frames], height, width)[0]


def clips_to_tensor(
    processor: Any,
    clips: list[Any],
    height: int,
    width: int,
    fill: float,
    frames: int,
    device: torch.device,
) -> torch.Tensor:
    """Clips (None = a clip of ``fill``) -> (B, C, T, H, W) float32 on ``device``."""
    tensors = [
        None if c is None else clip_to_tensor(processor, c, height, width, frames) for c in clips
    ]
    channels = max((t.shape[0] for t in tensors if t is not None), default=3)
    out = []
    for t in tensors:
        if t is None:
            t = torch.full((channels, frames, height, width), fill, dtype=torch.float32)
        elif t.shape[0] != channels:
            t = t.expand(channels, *t.shape[1:])  # a greyscale mask among RGB ones
        out.append(t)
    return torch.stack(out).to(device)


def video_to_numpy(video: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, H, W, 3) float32 in [0, 1], as diffusers' "np"
    (which rescales in the VAE's dtype, then converts)."""
    video = (video / 2 + 0.5).clamp(0, 1)
    return video.permute(0, 2, 3, 4, 1).cpu().float().numpy()


def numpy_to_frames(array: np.ndarray) -> list[Image.Image]:
    """(T, H, W, 3) in [0, 1] -> PIL frames (rounded as diffusers' ``numpy_to_pil``)."""
    return [Image.fromarray(frame) for frame in (array * 255).round().astype("uint8")]


def save_mp4(frames: Sequence[Image.Image], path: str | os.PathLike[str], fps: float = 16) -> Path:
    """Write frames as an mp4 (Wan2.1 makes 16 fps clips) with the core's ``save_video``."""
    from diffsynth_core import save_video

    return save_video(list(frames), path, fps=fps)
