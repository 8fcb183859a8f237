"""Bad-sample records and the log the training runner keeps of them.

A record is a small JSON-able dict made where a sample failed (possibly in a DataLoader
worker process); it travels inside the collated batch under ``"__bad__"`` and the runner feeds
it to a :class:`BadSampleLog`, which counts, summarises and appends it to ``bad_samples.jsonl``.

    log = BadSampleLog(output_dir / "bad_samples.jsonl")
    for batch in loader:
        data, bad = split_bad(batch)
        log.add(bad, step=step)
        if data is None:
            continue  # every sample of this batch was bad
    print(log.summary())
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .files import error_kind

BadRecord = dict[str, Any]


def make_record(
    error: BaseException, *, index: int, row: int, column: str | None, value: Any
) -> BadRecord:
    """The record of one failed sample: where (index, row, column, path) and why (kind, reason)."""
    path = getattr(error, "path", None)
    return {
        "index": int(index),
        "row": int(row),
        "column": column,
        "path": str(value) if value is not None else path,
        "kind": error_kind(error),
        "reason": str(error),
    }


def describe(record: Mapping[str, Any]) -> str:
    """One line for a record: ``row 3, column 'image' (a.png): missing: file does not exist``."""
    column = f", column {record['column']!r}" if record.get("column") else ""
    path = f" ({record['path']})" if record.get("path") else ""
    return f"row {record['row']}{column}{path}: {record['kind']}: {record['reason']}"


class BadSampleLog:
    """Counts skipped samples by kind and appends each record to a jsonl file (if given)."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.kinds: Counter[str] = Counter()
        self.rows: set[int] = set()

    def add(self, records: Iterable[Mapping[str, Any]], **extra: Any) -> int:
        """Count ``records`` (``extra`` fields such as ``step`` are written with each); returns how many."""
        lines = []
        for record in records:
            self.count += 1
            self.kinds[str(record.get("kind", "error"))] += 1
            self.rows.add(int(record.get("row", -1)))
            lines.append(json.dumps({**record, **extra}, ensure_ascii=False, default=str))
        if lines and self.path is not None:
            # Open per call, in append mode: bad samples are rare and a resumed run adds on.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        return len(lines)

    def add_batch(self, batch: Mapping[str, Any], **extra: Any) -> int:
        """Count the ``"__bad__"`` records of a collated batch."""
        return self.add(batch.get("__bad__", ()), **extra)

    def by_kind(self) -> dict[str, int]:
        """How many skips of each kind, most frequent first."""
        return dict(self.kinds.most_common())

    def summary(self) -> str:
        """A sentence for the end of a run (or the progress bar)."""
        if self.count == 0:
            return "no bad samples"
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())
        text = f"{self.count} bad sample(s) skipped from {len(self.rows)} row(s) ({kinds})"
        return f"{text}; details in {self.path}" if self.path is not None else text
