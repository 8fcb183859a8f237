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


def float_tiff(path: Path, pixels: np.ndarray, *, big_endian: bool = False, deflate: bool = False) -> Path:
    """An uncompressed (or deflate) float32 TIFF of an HxW or HxWxC array, one strip.

    Written by hand: PIL writes only one-channel float TIFFs, and tifffile is not a dependency.
    """
    order = ">" if big_endian else "<"
    pixels = np.ascontiguousarray(pixels, dtype=f"{order}f4")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    data = zlib.compress(pixels.tobytes()) if deflate else pixels.tobytes()
    n_tags = 11
    lists_at = 8 + 2 + n_tags * 12 + 4  # after the header and the one directory
    data_at = lists_at + (4 * channels if channels > 2 else 0)

    def shorts(values: list[int], offset: int) -> tuple[int, int, int, bytes]:
        if len(values) > 2:  # stored elsewhere, the entry holds the offset
            return 3, len(values), offset, b""
        return 3, len(values), -1, struct.pack(f"{order}{len(values)}H", *values).ljust(4, b"\0")

    entries = [
        (256, 4, 1, width), (257, 4, 1, height),
        (258, *shorts([32] * channels, lists_at)),
        (259, 3, 1, 8 if deflate else 1), (262, 3, 1, 2 if channels >= 3 else 1),
        (273, 4, 1, data_at), (277, 3, 1, channels), (278, 4, 1, height),
        (279, 4, 1, len(data)), (284, 3, 1, 1),
        (339, *shorts([3] * channels, lists_at + 2 * channels)),
    ]
    out = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(f"{order}IH", 8, n_tags)
    for tag, kind, count, value, *inline in entries:
        if inline and value == -1:
            out += struct.pack(f"{order}HHI", tag, kind, count) + inline[0]
        elif kind == 3 and count == 1:
            out += struct.pack(f"{order}HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack(f"{order}HHII", tag, kind, count, value)
    out += struct.pack(f"{order}I", 0)
    if channels > 2:
        out += struct.pack(f"{order}{2 * channels}H", *([32] * channels + [3] * channels))
    path.write_bytes(out + data)
    return path
