"""A start-up pass over a dataset: which rows will load, which won't, and why.

Every file is first checked from its header (exists, inside the dataset folder, non-empty,
readable by PIL, pixel count under the limit, big enough for the resize rule), then decoded as
training will decode it: images whole, clips up to the last frame training reads (no resizing,
and one frame held at a time). This backs ``diffsynth train --check-data``:

    report = validate(dataset)
    print(report.format())
    if not report.ok_rows:
        raise DatasetError("no usable rows")

``validate(dataset, decode=False)`` stops at the headers (milliseconds for any dataset; what
the start-up summary of a training run uses): a truncated PNG or an unreadable video passes it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadSampleError, DiffSynthError
from .bad_samples import BadRecord, describe, make_record
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

if TYPE_CHECKING:
    from .dataset import UnifiedDataset


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
    def of(cls, dataset: UnifiedDataset, column: str) -> ColumnProbe:
        operator = dataset.operator_for(column)
        to_abs = find_operator(operator, ToAbsolutePath)
        loader = find_operator(operator, LoadVideo) or find_operator(operator, LoadImage)
        return cls(
            base_path=to_abs.base_path if to_abs else dataset.base_path,
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


@dataclass
class ValidationReport:
    """Rows that will load (``ok_rows``) and refused ones with reasons (``refused`` records)."""

    source: str
    total_rows: int
    ok_rows: list[int] = field(default_factory=list)
    refused: list[BadRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # files of a captioned folder that did not pair

    @property
    def ok(self) -> bool:
        """True when every row passed."""
        return not self.refused

    @property
    def refused_rows(self) -> list[int]:
        return sorted({int(r["row"]) for r in self.refused})

    def format(self, limit: int = 20) -> str:
        """A human report: one summary line, then one line per refused file (up to ``limit``)."""
        lines = [
            f"Checked {self.total_rows} row(s) of {self.source}: {len(self.ok_rows)} ok, "
            f"{len(self.refused_rows)} refused."
        ]
        lines += [f"  {describe(record)}" for record in self.refused[:limit]]
        if len(self.refused) > limit:
            lines.append(f"  ... and {len(self.refused) - limit} more")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)


def validate(
    dataset: UnifiedDataset, decode: bool = True, workers: int | None = None
) -> ValidationReport:
    """Check (and with ``decode``, decode) every metadata row's files; see the module docstring.

    Rows are decoded by ``workers`` threads (default: up to 8, one per CPU): PIL decodes and
    ffmpeg runs outside the GIL, and starting ffmpeg (~0.1 s a clip) is most of a clip's cost.
    """
    source = str(dataset.metadata_path or dataset.base_path)
    report = ValidationReport(
        source=source, total_rows=len(dataset.rows), notes=list(getattr(dataset, "notes", ()))
    )
    probes = {
        column: ColumnProbe.of(dataset, column)
        for row in dataset.rows
        for column in dataset.file_columns(row)
    }

    def failures(row_index: int) -> list[BadRecord]:
        row, found = dataset.rows[row_index], []
        for column in dataset.file_columns(row):
            try:
                probes[column].check(row.get(column), decode)
            except Exception as error:  # as in UnifiedDataset.load: any failure is a bad sample,
                if isinstance(error, DiffSynthError) and not isinstance(error, BadSampleError):
                    raise  # but a configuration problem (imageio missing) stops the check
                value = row.get(column)
                found.append(
                    make_record(error, index=row_index, row=row_index, column=column, value=value)
                )
        return found

    count = (workers or min(8, os.cpu_count() or 1)) if decode else 1
    with ThreadPoolExecutor(max_workers=count) as pool:  # map keeps the rows' order
        for row_index, found in enumerate(pool.map(failures, range(len(dataset.rows)))):
            report.refused.extend(found)
            if not found:
                report.ok_rows.append(row_index)
    return report


def row_target_sizes(dataset: UnifiedDataset, column: str) -> list[tuple[int, int] | None]:
    """Each metadata row's size after the resize rule (None where it can't be read)."""
    probe = ColumnProbe.of(dataset, column)
    sizes: list[tuple[int, int] | None] = []
    for row in dataset.rows:
        try:
            sizes.append(probe.target_size(row.get(column)))
        except BadSampleError:
            sizes.append(None)  # it will surface as a bad sample when loaded
    return sizes
