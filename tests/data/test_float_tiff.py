"""Float TIFFs load as the picture they hold, not black (issue: mode F and float RGB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsynth_core.data.images import header_size, read_image
from diffsynth_core.errors import BadSampleError

from .media import float_tiff


@pytest.fixture
def png_twin(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """An 8-bit RGB PNG of noise (every level 0..255 appears) and its pixels."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    pixels[0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
    path = tmp_path / "twin.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


@pytest.mark.parametrize("scale", [1.0, 255.0], ids=["0..1", "0..255"])
@pytest.mark.parametrize("layout", ["little", "big", "deflate", "tiled"])
def test_float_rgb_tiff_is_its_png_twin(
    png_twin: tuple[Path, np.ndarray], tmp_path: Path, scale: float, layout: str
) -> None:
    png, pixels = png_twin
    tif = float_tiff(
        tmp_path / "twin.tif",
        pixels.astype(np.float32) / 255.0 * scale,
        big_endian=layout == "big",
        deflate=layout == "deflate",
        tiled=layout == "tiled",
    )
    loaded = read_image(tif)
    assert loaded.mode == "RGB" and loaded.size == (40, 24) == header_size(tif)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(read_image(png)))


@pytest.mark.parametrize("scale", [1.0, 255.0], ids=["0..1", "0..255"])
def test_mode_f_tiff_is_its_gray_png_twin(
    png_twin: tuple[Path, np.ndarray], tmp_path: Path, scale: float
) -> None:
    _, pixels = png_twin
    gray = pixels[..., 1]
    png = tmp_path / "gray.png"
    Image.fromarray(gray).save(png)
    tif = tmp_path / "gray.tif"
    Image.fromarray(gray.astype(np.float32) / 255.0 * scale).save(tif)  # PIL writes mode F
    assert Image.open(tif).mode == "F"
    np.testing.assert_array_equal(np.asarray(read_image(tif)), np.asarray(read_image(png)))


def test_float_rgba_tiff_is_composited_over_white(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.float32)  # black, fully transparent
    pixels[0, 0] = [1.0, 0.0, 0.0, 1.0]  # one opaque red pixel
    loaded = np.asarray(read_image(float_tiff(tmp_path / "rgba.tif", pixels)))
    assert loaded[0, 0].tolist() == [255, 0, 0]
    assert loaded[1, 1].tolist() == [255, 255, 255]


def test_truncated_float_tiff_is_a_bad_sample(
    png_twin: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    _, pixels = png_twin
    tif = float_tiff(tmp_path / "cut.tif", pixels.astype(np.float32) / 255.0)
    tif.write_bytes(tif.read_bytes()[:-100])
    with pytest.raises(BadSampleError) as caught:
        read_image(tif)
    assert caught.value.kind == "truncated"
