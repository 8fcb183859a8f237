"""What a column's operator will do to its files, read off the operator tree.

:class:`ColumnProbe` answers, from headers (or by decoding, for ``--check-data``), whether a
row's file will load and what size it will have after the resize rule. Used by the dataset
(``target_sizes`` for buckets) and by :mod:`.validation`; it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadSampleError
from .files import GIF_EXTENSIONS, IMAGE_EXTENSIONS, check_file, frame_files, resolve_inside
from .files import bad_sample as _bad
from .images import DEFAULT_PIXEL_LIMIT, header_size, read_image
from .operators import (
    ImageCropAndResize,
    LoadImage,
    LoadImageList,
    LoadVideo,
    ToAbsolutePath,
    find_operator,
    split_paths,
)
from .video import check_clip, probe_video_size


@dataclass
class ColumnProbe:
    """What a column's operator will do, read off the operator tree (no data touched)."""

    base_path: Path
    known: bool = True  # False: an operator of the user's that we can't read paths off
    is_video: bool = False
    is_list: bool = False
    pixel_limit: int = DEFAULT_PIXEL_LIMIT
    resize: ImageCropAndResize | None = None
    clip: LoadVideo | None = None

    @classmethod
    def of(cls, operator: Any, base_path: Path) -> ColumnProbe:
        """The probe of a column's operator (``UnifiedDataset.operator_for``) over ``base_path``."""
        to_abs = find_operator(operator, ToAbsolutePath)
        loader = find_operator(operator, LoadVideo) or find_operator(operator, LoadImage)
        return cls(
            base_path=to_abs.base_path if to_abs else base_path,
            known=bool(to_abs or loader),
            is_video=isinstance(loader, LoadVideo),
            is_list=find_operator(operator, LoadImageList) is not None,
            pixel_limit=loader.pixel_limit if loader else DEFAULT_PIXEL_LIMIT,
            resize=find_operator(operator, ImageCropAndResize),
            clip=loader if isinstance(loader, LoadVideo) else None,
        )

    def paths(self, value: Any) -> list[Any]:
        return split_paths(value) if self.is_list else [value]

    def check(self, value: Any, decode: bool = True) -> None:
        """BadSampleError if a file of ``value`` will not load (see the module docstring)."""
        if not self.known:
            return
        for item in self.paths(value):
            self._check_one(resolve_inside(self.base_path, item), decode)

    def _check_one(self, path: Path, decode: bool) -> None:
        if self.is_video and path.is_dir():
            if not frame_files(path):
                raise _bad("missing", "frame folder holds no image files", path=path)
        else:
            check_file(path)
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS | GIF_EXTENSIONS:
            self._resized(header_size(path, self.pixel_limit))  # "too small" before decoding
        if not decode:
            return
        if self.clip is not None:
            self._resized(self._decode_clip(path, self.clip))
        else:
            read_image(path, self.pixel_limit)

    def _decode_clip(self, path: Path, clip: LoadVideo) -> tuple[int, int]:
        return check_clip(
            path,
            clip.num_frames,
            time_division_factor=clip.time_division_factor,
            time_division_remainder=clip.time_division_remainder,
            frame_rate=clip.frame_rate,
            pixel_limit=self.pixel_limit,
        )

    def _resized(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.resize.size_for(*size) if self.resize else size

    def target_size(self, value: Any) -> tuple[int, int]:
        """The size this value will have after loading (cheapest way: config, header, 1 frame)."""
        if self.resize is not None and self.resize.height is not None:
            return self.resize.width, self.resize.height  # type: ignore[return-value]
        path = resolve_inside(self.base_path, self.paths(value)[0])
        size = (
            probe_video_size(path, self.pixel_limit)
            if self.is_video
            else header_size(path, self.pixel_limit)
        )
        return self._resized(size)


def row_target_sizes(
    rows: list[dict[str, Any]], column: str, probe: ColumnProbe
) -> list[tuple[int, int] | None]:
    """Each row's size after the resize rule (None where it can't be read)."""
    sizes: list[tuple[int, int] | None] = []
    for row in rows:
        try:
            sizes.append(probe.target_size(row.get(column)))
        except BadSampleError:
            sizes.append(None)  # it will surface as a bad sample when loaded
    return sizes
