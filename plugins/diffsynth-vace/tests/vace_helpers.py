"""Small clips for the Wan VACE tests (a uniquely named module: test folders share sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DATA = REPO / "examples" / "wan_vace" / "data"


def random_clip(seed: int, frames: int = 9, size: int = 64) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        for _ in range(frames)
    ]


def random_mask(seed: int, frames: int = 9, size: int = 64) -> list[Image.Image]:
    """Greyscale ("L") masks with soft values, so binarised and raw masks differ."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L")
        for _ in range(frames)
    ]


def moving_square(frames: int = 9, size: int = 64) -> list[Image.Image]:
    """A white square moving right over black: a clip worth overfitting."""
    clip = []
    for i in range(frames):
        array = np.zeros((size, size, 3), dtype=np.uint8)
        array[24:40, 4 + 4 * i : 20 + 4 * i] = 255
        clip.append(Image.fromarray(array))
    return clip
