"""Composable data operators: small callables chained with ``>>``.

    load = ToAbsolutePath("data/") >> LoadImage() >> ImageCropAndResize(512, 512)
    image = load("photos/cat.png")

Each operator turns one value into the next (a relative path into an absolute one, a path
into an image, an image into a resized image). Operators are plain picklable objects, so a
dataset holding them can be sent to DataLoader worker processes. Any callable can join a chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .files import PathLike, bad_sample, is_empty_value, resolve_inside
from .images import (
    DEFAULT_PIXEL_LIMIT,
    check_fixed_size,
    crop_and_resize,
    read_image,
    target_size,
)
from .video import check_frame_options, read_frames


class DataOperator:
    """Base of every operator: ``a >> b`` is the operator that applies ``a`` then ``b``."""

    def __call__(self, data: Any) -> Any:
        raise NotImplementedError

    def __rshift__(self, other: Callable[[Any], Any]) -> Chain:
        return Chain(self, other)

    def children(self) -> tuple[Callable[[Any], Any], ...]:
        """Operators this one delegates to (lets tools find e.g. the resize rule in a chain)."""
        return ()


class Chain(DataOperator):
    """Operators applied left to right; nested chains are flattened."""

    def __init__(self, *operators: Callable[[Any], Any]):
        flat: list[Callable[[Any], Any]] = []
        for op in operators:
            flat.extend(op.operators if isinstance(op, Chain) else (op,))
        self.operators: tuple[Callable[[Any], Any], ...] = tuple(flat)

    def __call__(self, data: Any) -> Any:
        for op in self.operators:
            data = op(data)
        return data

    def children(self) -> tuple[Callable[[Any], Any], ...]:
        return self.operators

    def __repr__(self) -> str:
        return " >> ".join(repr(op) for op in self.operators)


def walk(operator: Callable[[Any], Any] | None) -> Iterator[Callable[[Any], Any]]:
    """``operator`` and every operator inside it, depth first."""
    if operator is None:
        return
    yield operator
    if isinstance(operator, DataOperator):
        for child in operator.children():
            yield from walk(child)


def find_operator(operator: Callable[[Any], Any] | None, kind: type) -> Any | None:
    """The first operator of type ``kind`` in ``operator``'s tree, or None."""
    return next((op for op in walk(operator) if isinstance(op, kind)), None)


class ToAbsolutePath(DataOperator):
    """A metadata path made absolute under ``base_path``; refused if it resolves outside it."""

    def __init__(self, base_path: PathLike):
        self.base_path = Path(base_path)

    def __call__(self, data: Any) -> str:
        # A str (not a Path), like the seed's operator, for custom operators doing str checks.
        return str(resolve_inside(self.base_path, data))

    def __repr__(self) -> str:
        return f"ToAbsolutePath({str(self.base_path)!r})"


class LoadImage(DataOperator):
    """A path to an 8-bit RGB image (any PIL mode converted; alpha composited over white).

    Images whose header claims more than ``pixel_limit`` pixels are refused before decoding.
    """

    def __init__(self, pixel_limit: int = DEFAULT_PIXEL_LIMIT):
        self.pixel_limit = pixel_limit

    def __call__(self, data: Any) -> Image.Image:
        return read_image(Path(data), self.pixel_limit)

    def __repr__(self) -> str:
        return f"LoadImage(pixel_limit={self.pixel_limit})"


class ImageCropAndResize(DataOperator):
    """An image resized by the rule of :func:`~diffsynth_core.data.images.target_size`.

    With ``height`` and ``width``: scaled to cover that size, then center-cropped. Without:
    scaled down (never up) to at most ``max_pixels``, floored to the division factors.
    """

    def __init__(
        self,
        height: int | None = None,
        width: int | None = None,
        max_pixels: int = 1024 * 1024,
        height_division_factor: int = 16,
        width_division_factor: int = 16,
    ):
        check_fixed_size(height, width, height_division_factor, width_division_factor)
        self.height, self.width, self.max_pixels = height, width, max_pixels
        self.height_division_factor = height_division_factor
        self.width_division_factor = width_division_factor

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an image of this size becomes; no decoding needed."""
        return target_size(
            width,
            height,
            height=self.height,
            width=self.width,
            max_pixels=self.max_pixels,
            height_division_factor=self.height_division_factor,
            width_division_factor=self.width_division_factor,
        )

    def __call__(self, data: Image.Image) -> Image.Image:
        return crop_and_resize(data, *self.size_for(*data.size))

    def __repr__(self) -> str:
        if self.height is not None:
            return f"ImageCropAndResize(height={self.height}, width={self.width})"
        return f"ImageCropAndResize(max_pixels={self.max_pixels})"


def split_paths(value: Any, separator: str = ",") -> list[str]:
    """A cell holding several paths: a list, a JSON list string, or ``sep``-separated text."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif is_empty_value(value):
        items = []
    elif isinstance(value, str) and value.strip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError as error:
            raise bad_sample("empty value", f"cell is not a valid JSON list: {error}") from error
    else:
        items = str(value).split(separator)
    paths = [str(item).strip() for item in items if not is_empty_value(item)]
    if not paths:
        raise bad_sample("empty value", "the cell holds no file path")
    return paths


class LoadImageList(DataOperator):
    """A cell naming several images (JSON list or comma-separated) to a list of loaded images."""

    def __init__(self, operator: Callable[[Any], Any], separator: str = ","):
        self.operator, self.separator = operator, separator

    def __call__(self, data: Any) -> list[Any]:
        return [self.operator(path) for path in split_paths(data, self.separator)]

    def children(self) -> tuple[Callable[[Any], Any], ...]:
        return (self.operator,)


class LoadVideo(DataOperator):
    """A clip path (video file, gif, frame folder, single image) to a list of RGB frames.

    Takes the first N frames with N % time_division_factor == time_division_remainder (4k+1 by
    default), N <= num_frames; a shorter clip is cut to the largest valid N. With
    ``frame_rate`` frames are picked by timestamp (k / frame_rate seconds). Each frame then
    goes through ``frame_processor`` (usually an :class:`ImageCropAndResize`).
    """

    def __init__(
        self,
        num_frames: int = 81,
        time_division_factor: int = 4,
        time_division_remainder: int = 1,
        frame_rate: float | None = None,
        frame_processor: Callable[[Image.Image], Any] | None = None,
        pixel_limit: int = DEFAULT_PIXEL_LIMIT,
    ):
        check_frame_options(num_frames, time_division_factor, time_division_remainder, frame_rate)
        self.num_frames, self.frame_rate = num_frames, frame_rate
        self.time_division_factor = time_division_factor
        self.time_division_remainder = time_division_remainder
        self.frame_processor, self.pixel_limit = frame_processor, pixel_limit

    def __call__(self, data: Any) -> list[Any]:
        frames = read_frames(
            Path(data),
            self.num_frames,
            time_division_factor=self.time_division_factor,
            time_division_remainder=self.time_division_remainder,
            frame_rate=self.frame_rate,
            pixel_limit=self.pixel_limit,
        )
        process = self.frame_processor or (lambda frame: frame)
        return [process(frame) for frame in frames]

    def children(self) -> tuple[Callable[[Any], Any], ...]:
        return (self.frame_processor,) if self.frame_processor is not None else ()
