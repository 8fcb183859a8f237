"""Reading images safely and the resize rule.

* :func:`read_image` opens a file, refuses it from its header alone when it claims more pixels
  than the limit (a decompression bomb is never decoded), decodes it, applies the EXIF
  orientation and turns every PIL mode into 8-bit RGB (alpha composited over white).
* :func:`header_size` reads only the header: the size training will see, without decoding.
* :func:`target_size` is the resize rule as a pure function, so buckets can sort rows by
  their final size without loading anything; :func:`crop_and_resize` applies it.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BadSampleError, ConfigError
from .files import bad_sample, check_file
from .tiff import float_tiff_image, float_to_uint8, open_float_tiff

DEFAULT_PIXEL_LIMIT = 2**28  # ~268 Mpx: far above any training image, far below a bomb
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # transposes and 90-degree rotations swap w and h
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PIL_LIMIT_LOCK = threading.Lock()
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@contextmanager
def _pil_pixel_limit(pixel_limit: int) -> Iterator[None]:
    """Set PIL's own bomb limit for one call, so our limit (not the global one) decides.

    PIL checks ``Image.MAX_IMAGE_PIXELS`` inside ``Image.open``; we set it to our limit and
    silence its warning because :func:`_refuse_large` refuses those images with context anyway.
    """
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = pixel_limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _refuse_large(size: tuple[int, int], pixel_limit: int, path: Path) -> None:
    width, height = size
    if width * height > pixel_limit:
        raise bad_sample(
            "too large",
            f"image is {width}x{height} = {width * height} pixels, above the limit of "
            f"{pixel_limit}; it was refused before decoding (raise pixel_limit if it is genuine)",
            path=path,
        )


# What PIL raises for unreadable files (SyntaxError: some plugins' header parsers).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _pil_error(error: Exception, path: Path) -> BadSampleError:
    """The PIL exception ``error`` as a BadSampleError with a kind a user understands."""
    if isinstance(error, Image.DecompressionBombError):
        return bad_sample("too large", f"refused before decoding: {error}", path=path)
    if isinstance(error, UnidentifiedImageError):
        return bad_sample("corrupt", "not an image file PIL can read", path=path)
    if "truncated" in str(error):
        return bad_sample("truncated", f"image data is truncated: {error}", path=path)
    return bad_sample("corrupt", f"cannot decode image: {type(error).__name__}: {error}", path=path)


def open_image(path: Path, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> Image.Image:
    """The lazily opened image (header read, nothing decoded), refused if it is too large."""
    check_file(path)
    with _pil_pixel_limit(pixel_limit):  # only the header is read under the lock
        image = Image.open(path)
    try:
        _refuse_large(image.size, pixel_limit, path)
    except BadSampleError:
        image.close()
        raise
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation known from the header (the same value for sizing and loading)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # PIL would decode the whole PNG to look for a late eXIf chunk
    return int(image.getexif().get(_EXIF_ORIENTATION, 1))


def header_size(path: Path, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> tuple[int, int]:
    """(width, height) as training will see it (EXIF rotation applied), from the header only."""
    try:
        with open_image(path, pixel_limit) as image:
            orientation = _orientation(image)
            width, height = image.size
    except UnidentifiedImageError as error:
        tiff = open_float_tiff(path)  # float RGB TIFFs: PIL has no mode for them
        if tiff is None:
            raise _pil_error(error, path) from error
        _refuse_large(tiff.size, pixel_limit, path)
        return tiff.size
    except _PIL_ERRORS as error:
        raise _pil_error(error, path) from error
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def read_image(path: Path, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> Image.Image:
    """The image at ``path`` as 8-bit RGB; BadSampleError if missing, corrupt or too large."""
    try:
        with open_image(path, pixel_limit) as image:
            orientation = _orientation(image)
            image.load()
            rgb = to_rgb(image)
    except UnidentifiedImageError as error:
        tiff = open_float_tiff(path)
        if tiff is None:
            raise _pil_error(error, path) from error
        _refuse_large(tiff.size, pixel_limit, path)
        return to_rgb(float_tiff_image(tiff))
    except _PIL_ERRORS as error:
        raise _pil_error(error, path) from error
    return rgb.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit scaled (not clipped), transparency over white."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        return _high_depth_to_rgb(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # PIL's own convert() clips 16-bit values at 255, turning most photos white, and float
    # ones in 0..1 at 1, turning them black.
    if image.mode == "F":
        gray = float_to_uint8(np.asarray(image))
    else:
        values = np.asarray(image).astype(np.float32) / 257.0  # 65535 -> 255
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def check_fixed_size(height: int | None, width: int | None, h_factor: int, w_factor: int) -> None:
    """ConfigError unless height/width are both unset, or both set to multiples of the factors."""
    if (height is None) != (width is None):
        raise ConfigError("give both height and width for a fixed size, or neither")
    if height is not None and (height % h_factor or width % w_factor):  # type: ignore[operator]
        raise ConfigError(
            f"fixed size {width}x{height} must be a multiple of {w_factor}x{h_factor} (width x height)"
        )


def target_size(
    w: int,
    h: int,
    *,
    height: int | None = None,
    width: int | None = None,
    max_pixels: int = 1024 * 1024,
    height_division_factor: int = 16,
    width_division_factor: int = 16,
) -> tuple[int, int]:
    """The (width, height) an image of ``w`` x ``h`` pixels becomes under the resize rule.

    A fixed target size wins. Otherwise the image is scaled down (never up) to at most
    ``max_pixels`` keeping its aspect ratio, then floored to multiples of the division factors.
    """
    if height is not None and width is not None:
        return width, height
    scale = min(1.0, math.sqrt(max_pixels / (w * h)))
    out_w = int(w * scale + 1e-6) // width_division_factor * width_division_factor
    out_h = int(h * scale + 1e-6) // height_division_factor * height_division_factor
    while out_w * out_h > max_pixels:  # float rounding can overshoot by one step
        if out_w / w >= out_h / h:
            out_w -= width_division_factor
        else:
            out_h -= height_division_factor
    if out_w <= 0 or out_h <= 0:
        raise bad_sample(
            "too small",
            f"image is {w}x{h}; it needs at least "
            f"{width_division_factor}x{height_division_factor} pixels",
        )
    return out_w, out_h


def crop_and_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled to cover ``width`` x ``height`` (aspect kept), then center-cropped."""
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    scaled_w = max(width, round(image.width * scale))
    scaled_h = max(height, round(image.height * scale))
    if (scaled_w, scaled_h) != image.size:
        image = image.resize((scaled_w, scaled_h), Image.Resampling.LANCZOS)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return image.crop((left, top, left + width, top + height))
