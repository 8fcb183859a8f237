"""``diffsynth controlnet prepare``: control images for every row of a plain dataset.

For each row the image column's file is read (through the core's safe reader: path kept inside
the dataset, decompression bombs refused), turned into a control image by the selected kind,
and written as PNG under ``DATASET/control/`` mirroring the image's relative path. A new
metadata file (same format as the input one, ``metadata_<kind>.csv`` by default) holds every
column of the input plus the output column. Rows whose image cannot be read are left out of
it and counted, so one bad file never stops the preparation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsynth_core import (
    BadSampleError,
    DatasetError,
    Row,
    check_columns,
    read_image,
    read_metadata,
    resolve_inside,
    scan_folder,
)

logger = logging.getLogger(__name__)
CONTROL_FOLDER = "control"


@dataclass
class PrepareReport:
    """What a preparation did: rows written, rows skipped (with why) and the new metadata."""

    metadata: Path
    written: int = 0
    reused: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _load_rows(dataset: Path, metadata: Path | None, image_column: str) -> tuple[list[Row], str]:
    """The rows and the suffix of the metadata they came from (``.csv`` for a scanned folder)."""
    if metadata is None:
        for name in ("metadata.csv", "metadata.jsonl", "metadata.json"):
            if (dataset / name).is_file():
                metadata = dataset / name
                break
    rows = read_metadata(metadata) if metadata is not None else scan_folder(dataset, image_column).rows
    if not rows:
        raise DatasetError(f"{metadata or dataset} holds no samples to prepare")
    check_columns(rows, [image_column], str(metadata or dataset))
    return rows, metadata.suffix.lower() if metadata is not None else ".csv"


def control_path(dataset: Path, image_path: Path, kind: str) -> Path:
    """Where the control image of ``image_path`` goes: ``control/<kind>/<relative>.png``."""
    relative = image_path.relative_to(dataset.resolve())
    return dataset / CONTROL_FOLDER / kind / relative.with_suffix(".png")


def _prepare_row(
    dataset: Path, row: Row, image_column: str, kind: str, fn: Callable[..., Any], overwrite: bool
) -> tuple[str, bool]:
    """Write one control image; its dataset-relative path and whether it was reused."""
    image_path = resolve_inside(dataset, row[image_column])
    target = control_path(dataset, image_path, kind)
    relative = target.relative_to(dataset).as_posix()
    if target.is_file() and not overwrite:
        return relative, True
    image = read_image(image_path)
    control = fn(image)
    if control.size != image.size:
        raise DatasetError(
            f"control kind {kind!r} returned {control.size} for an image of {image.size}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    control.save(tmp)
    tmp.replace(target)  # atomic: an interrupted run never leaves half a PNG behind
    return relative, False


def write_metadata(rows: list[Row], path: Path) -> None:
    """Rows to ``path`` in the format its suffix names (csv, jsonl or json)."""
    if path.suffix == ".csv":
        import pandas as pd

        pd.DataFrame(rows).to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


def prepare_dataset(
    dataset: str | Path,
    kind: str,
    fn: Callable[..., Any],
    metadata: str | Path | None = None,
    image_column: str = "image",
    output_column: str = "control_image",
    output_metadata: str | Path | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Write ``kind`` control images for every row and a metadata file with ``output_column``."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise DatasetError(f"dataset folder {dataset} does not exist")
    rows, suffix = _load_rows(dataset, Path(metadata) if metadata else None, image_column)
    out_path = Path(output_metadata) if output_metadata else dataset / f"metadata_{kind}{suffix}"
    report = PrepareReport(metadata=out_path)
    kept: list[Row] = []
    for index, row in enumerate(rows):
        try:
            relative, reused = _prepare_row(dataset, row, image_column, kind, fn, overwrite)
        except BadSampleError as error:
            report.skipped.append(
                (index, f"{error} ({getattr(error, 'path', None) or row[image_column]})")
            )
            continue
        report.reused += reused
        report.written += not reused
        kept.append({**row, output_column: relative})
    if not kept:
        raise DatasetError(
            f"no image of {dataset} could be read; first error: {report.skipped[0][1]}"
        )
    write_metadata(kept, out_path)
    return report
