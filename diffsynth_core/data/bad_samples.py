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

from ..errors import BadSampleError
from .files import error_kind

BadRecord = dict[str, Any]
_WORKER_PREFIX = "Caught "  # torch: "Caught <Type> in DataLoader worker process N.\nOriginal ..."


class SampleLoadError(BadSampleError):
    """The error a dataset raises for one sample: ``row 3, column 'image' (a.png): missing: ...``.

    A DataLoader worker cannot send the error itself to the main process: torch re-raises it as
    ``type(error)(text)``, the text being "Caught SampleLoadError in DataLoader worker process
    0. Original Traceback ..." and the worker's whole traceback. Built from such a text, this
    error keeps only its own message (the last line of that traceback, after its class name), so
    ``--on-bad-sample error`` ends with that one line; the worker's traceback stays available as
    ``worker_traceback`` (and a note, printed with the traceback under DIFFSYNTH_DEBUG=1).
    """

    def __init__(
        self,
        message: str,
        *,
        row: int | None = None,
        path: str | None = None,
        kind: str | None = None,
    ):
        own, worker_traceback = self._unwrap(message)
        super().__init__(own, row=row, path=path, kind=kind)
        self.worker_traceback = worker_traceback
        if worker_traceback and hasattr(self, "add_note"):  # Python 3.11+
            self.add_note(worker_traceback)

    @classmethod
    def _unwrap(cls, message: str) -> tuple[str, str | None]:
        if not message.startswith(_WORKER_PREFIX):
            return message, None
        marker = f"\n{cls.__module__}.{cls.__qualname__}: "
        at = message.rfind(marker)  # the outermost error comes last in a chained traceback
        if at < 0:
            return message, None
        return message[at + len(marker) :].strip(), message


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
