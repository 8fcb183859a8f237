"""Reading images: every PIL mode to RGB, and every way a file can be bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsynth_core.data.files import error_kind
from diffsynth_core.data.images import header_size, read_image, to_rgb
from diffsynth_core.errors import BadSampleError

from .media import huge_png_header, solid


def pixel(image: Image.Image) -> tuple[int, ...]:
    return image.getpixel((0, 0))  # type: ignore[return-value]


def test_rgba_alpha_is_composited_over_white(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    image = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    image.putpixel((1, 1), (0, 0, 255, 255))
    image.putpixel((2, 2), (0, 0, 0, 128))
    image.save(path)
    rgb = read_image(path)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> white, not blue
    assert rgb.getpixel((1, 1)) == (0, 0, 255)
    assert rgb.getpixel((2, 2)) == (127, 127, 127)  # half black over white


def test_la_image_over_white(tmp_path: Path) -> None:
    path = solid(tmp_path / "la.png", (4, 4), (0, 0), mode="LA")
    assert pixel(read_image(path)) == (255, 255, 255)


def test_cmyk_is_converted(tmp_path: Path) -> None:
    path = solid(tmp_path / "c.tiff", (4, 4), (0, 255, 255, 0), mode="CMYK")
    assert Image.open(path).mode == "CMYK"
    assert pixel(read_image(path)) == (255, 0, 0)


def test_palette_image_with_and_without_transparency(tmp_path: Path) -> None:
    plain = Image.new("P", (4, 4), 1)
    plain.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    plain.save(tmp_path / "p.png")
    assert pixel(read_image(tmp_path / "p.png")) == (10, 200, 30)
    plain.save(tmp_path / "pt.png", transparency=1)
    assert pixel(read_image(tmp_path / "pt.png")) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 128 * 257, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert pixel(read_image(path)) == (128, 128, 128)


def test_float_mode_is_clipped_to_bytes() -> None:
    image = Image.fromarray(np.array([[300.0, -5.0, 42.4]], np.float32))
    assert list(np.asarray(to_rgb(image))[0, :, 0]) == [255, 0, 42]


def test_exif_rotation_is_applied_and_header_agrees(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 60x20, shown 20x60
    Image.new("RGB", (60, 20), "red").save(path, exif=exif)
    assert read_image(path).size == (20, 60)
    assert header_size(path) == (20, 60)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: None, "missing"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not a png"), "corrupt"),
    ],
    ids=["missing", "zero-byte", "corrupt"],
)
def test_bad_files_are_bad_samples(tmp_path: Path, make: object, kind: str) -> None:
    path = tmp_path / "x.png"
    make(path)  # type: ignore[operator]
    with pytest.raises(BadSampleError) as info:
        read_image(path)
    assert error_kind(info.value) == kind
    assert info.value.path == str(path)


def test_truncated_image(tmp_path: Path) -> None:
    path = tmp_path / "t.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadSampleError, match="truncated") as info:
        read_image(path)
    assert error_kind(info.value) == "truncated"


def test_bomb_header_refused_before_decoding(tmp_path: Path) -> None:
    # The IDAT holds 64 bytes: decoding would fail as "truncated", so "too large" proves the
    # refusal came from the header alone. 50000^2 is above PIL's own limit too.
    path = huge_png_header(tmp_path / "bomb.png", 50_000, 50_000)
    saved = Image.MAX_IMAGE_PIXELS
    for read in (read_image, header_size):
        with pytest.raises(BadSampleError) as info:
            read(path)
        assert error_kind(info.value) == "too large"
    assert Image.MAX_IMAGE_PIXELS == saved  # the per-call limit does not leak


def test_pixel_limit_is_configurable(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    path = huge_png_header(tmp_path / "mid.png", 20_000, 10_000)  # 2e8 px: under 2**28
    with pytest.raises(BadSampleError, match="above the limit of 100000000"):
        read_image(path, pixel_limit=100_000_000)
    small = solid(tmp_path / "s.png", (20, 10))
    with pytest.raises(BadSampleError, match="200 pixels"):
        read_image(small, pixel_limit=199)
    assert read_image(small, pixel_limit=200).size == (20, 10)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
