"""Floating-point TIFFs: scaled to 8 bits; the float RGB ones PIL cannot open are read by tifffile.

PIL opens a one-channel float TIFF as mode ``F`` but refuses 3- or 4-channel float TIFFs (it
has no multi-channel float mode), as written by tifffile, OpenCV or HDR tools. Those are read
with tifffile (a maintained TIFF reader: strips, tiles, deflate/LZW/predictors, either byte
order). Float pixels are either in 0..1 (the usual convention) or in 0..255;
:func:`float_to_uint8` tells them apart by the largest value: an image whose values all lie in
0..1 is taken as 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadSampleError
from .files import bad_sample

TIFF_SUFFIXES = (".tif", ".tiff")


def float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixels as uint8: 0..1 scaled by 255, otherwise taken as 0..255; NaN is 0."""
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and float(values.max()) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@dataclass
class FloatTiff:
    """The first page of a float TIFF, from its header (no pixel data read yet)."""

    path: Path
    size: tuple[int, int]  # (width, height)

    def pixels(self) -> np.ndarray:
        """The pixels as an HxWxC float array (C = samples per pixel)."""
        import tifffile

        with tifffile.TiffFile(self.path) as tif:
            page = tif.pages.first
            values = page.asarray()
            planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and values.ndim == 3
        if planar:
            values = values.transpose(1, 2, 0)
        return values[..., None] if values.ndim == 2 else values


def open_float_tiff(path: Path) -> FloatTiff | None:
    """The float TIFF at ``path`` (header only), or None if it is not a float TIFF."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            if page.sampleformat != tifffile.SAMPLEFORMAT.IEEEFP:
                return None
            return FloatTiff(path, (int(page.imagewidth), int(page.imagelength)))
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError):
        return None


def float_tiff_image(tiff: FloatTiff) -> Image.Image:
    """An opened float TIFF as an 8-bit L, LA, RGB or RGBA image (alpha scaled like colour)."""
    try:
        values = tiff.pixels()
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise _bad(tiff.path, error) from error
    channels = min(values.shape[2], 4)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    pixels = float_to_uint8(values[..., :channels])
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)


def _bad(path: Path, error: Exception) -> BadSampleError:
    text = str(error)
    kind = "truncated" if any(w in text.lower() for w in ("truncat", "failed to read")) else "corrupt"
    hint = "" if "imagecodecs" not in text else " (pip install imagecodecs for this compression)"
    return bad_sample(kind, f"cannot decode float TIFF: {text}{hint}", path=path)
