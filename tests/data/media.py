"""Tiny media files for the data tests, generated on the fly (nothing is downloaded)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def solid(
    path: Path, size: tuple[int, int] = (64, 48), color: object = (200, 30, 30), mode: str = "RGB"
) -> Path:
    """A one-color image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def gray_frames(count: int, size: tuple[int, int] = (32, 32), step: int = 12) -> list[Image.Image]:
    """Frames whose gray level says their index (level = index * step): survives lossy codecs."""
    return [Image.new("RGB", size, (i * step,) * 3) for i in range(count)]


def frame_level(frame: Image.Image) -> int:
    """The index a :func:`gray_frames` frame encodes, read back from its mean level."""
    return int(round(float(np.asarray(frame).mean()) / 12))


def huge_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but holds almost no data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return path


def float_tiff(
    path: Path, pixels: np.ndarray, *, big_endian: bool = False, deflate: bool = False, tiled: bool = False
) -> Path:
    """A float32 TIFF of an HxW or HxWxC array, written by tifffile (PIL writes only one channel)."""
    import tifffile

    tifffile.imwrite(
        path,
        np.asarray(pixels, dtype=np.float32),
        byteorder=">" if big_endian else "<",
        compression="zlib" if deflate else None,
        tile=(16, 16) if tiled else None,
        photometric="rgb" if np.ndim(pixels) == 3 and np.shape(pixels)[2] >= 3 else "minisblack",
    )
    return path
