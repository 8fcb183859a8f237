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
from typing import TYPE_CHECKING

from ..errors import BadSampleError, DiffSynthError
from .bad_samples import BadRecord, describe, make_record
from .probe import ColumnProbe

if TYPE_CHECKING:
    from .dataset import UnifiedDataset


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
        column: ColumnProbe.of(dataset.operator_for(column), dataset.base_path)
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
