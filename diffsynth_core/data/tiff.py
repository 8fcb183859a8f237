"""Floating-point TIFFs: scaled to 8 bits, and the float RGB ones PIL cannot open read here.

PIL opens a one-channel float TIFF as mode ``F`` but refuses 3- or 4-channel float TIFFs (it
has no multi-channel float mode), as written by tifffile, OpenCV or HDR tools. Float pixels
are either in 0..1 (the usual convention) or in 0..255; :func:`float_to_uint8` tells them
apart by the largest value: an image whose values all lie in 0..1 is taken as 0..1.

:func:`read_float_tiff` reads the strips of an uncompressed or deflate-compressed float TIFF
(little or big endian, chunky or planar, 16/32/64-bit floats) straight into numpy; other
layouts (tiles, LZW, predictors) are refused with what to do instead.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin

from ..errors import BadSampleError
from .files import bad_sample

TIFF_SUFFIXES = (".tif", ".tiff")
_FLOAT_FORMAT = 3  # SampleFormat tag value for IEEE floating point
_UNCOMPRESSED, _DEFLATE = (1,), (8, 32946)
_CONVERT_HINT = "save it as an uncompressed or deflate float TIFF, or as 8/16-bit"


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
    tags: dict[int, object]
    big_endian: bool

    @property
    def size(self) -> tuple[int, int]:
        return int(self.tags[256]), int(self.tags[257])  # type: ignore[call-overload]

    def _tag(self, number: int, default: object) -> tuple[int, ...]:
        value = self.tags.get(number, default)
        return tuple(value) if isinstance(value, tuple) else (int(value),)  # type: ignore[call-overload]

    def pixels(self) -> np.ndarray:
        """The pixels as an HxWxC float array (C = samples per pixel)."""
        width, height = self.size
        channels = self._tag(277, 1)[0]
        bits = self._tag(258, 32)[0]
        compression = self._tag(259, 1)[0]
        if 322 in self.tags or compression not in _UNCOMPRESSED + _DEFLATE:
            raise self._unsupported(f"tiles or compression {compression}")
        if self._tag(317, 1)[0] != 1:
            raise self._unsupported("a predictor")
        dtype = np.dtype(f"{'>' if self.big_endian else '<'}f{bits // 8}")
        data = b"".join(self._strips(compression))
        planar = self._tag(284, 1)[0] == 2
        count = width * height * channels
        if len(data) < count * dtype.itemsize:
            raise bad_sample(
                "truncated", "float TIFF holds fewer pixels than its header says", path=self.path
            )
        flat = np.frombuffer(data, dtype=dtype, count=count)
        if planar:
            return flat.reshape(channels, height, width).transpose(1, 2, 0)
        return flat.reshape(height, width, channels)

    def _strips(self, compression: int) -> list[bytes]:
        offsets, counts = self._tag(273, ()), self._tag(279, ())
        strips = []
        with self.path.open("rb") as handle:
            for offset, count in zip(offsets, counts, strict=True):
                handle.seek(offset)
                strip = handle.read(count)
                strips.append(zlib.decompress(strip) if compression in _DEFLATE else strip)
        return strips

    def _unsupported(self, what: str) -> BadSampleError:
        return bad_sample(
            "corrupt", f"float TIFF with {what} is not supported; {_CONVERT_HINT}", path=self.path
        )


def open_float_tiff(path: Path) -> FloatTiff | None:
    """The float TIFF at ``path`` (header only), or None if it is not a float TIFF."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    with path.open("rb") as handle:
        head = handle.read(8)
        if head[:4] not in (b"II*\x00", b"MM\x00*"):
            return None
        try:
            directory = TiffImagePlugin.ImageFileDirectory_v2(head)
            handle.seek(directory.next)
            directory.load(handle)
        except (OSError, ValueError, SyntaxError, KeyError):
            return None
    tags = dict(directory)
    formats = tags.get(339, 1)
    if _FLOAT_FORMAT not in (formats if isinstance(formats, tuple) else (formats,)):
        return None
    if 256 not in tags or 257 not in tags:
        return None
    return FloatTiff(path, tags, big_endian=head[:2] == b"MM")


def float_tiff_image(tiff: FloatTiff) -> Image.Image:
    """An opened float TIFF as an 8-bit L, LA, RGB or RGBA image (alpha scaled like colour)."""
    try:
        values = tiff.pixels()
    except (OSError, ValueError, zlib.error) as error:
        raise bad_sample("corrupt", f"cannot decode float TIFF: {error}", path=tiff.path) from error
    channels = min(values.shape[2], 4)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    pixels = float_to_uint8(values[..., :channels])
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
