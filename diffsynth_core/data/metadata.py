"""Reading a dataset's metadata into a list of rows (one dict per sample).

Formats: ``.csv`` (pandas), ``.json`` (a list of objects), ``.jsonl`` (one object a line); a
folder without a metadata file is read by :mod:`.folder`.
Text is read as UTF-8 (a byte-order mark, as Excel writes, is accepted); anything else is a
:class:`DatasetError` that names the file and says how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DatasetError

Row = dict[str, Any]
METADATA_SUFFIXES = (".csv", ".json", ".jsonl")


def _not_utf8(path: Path, error: UnicodeDecodeError) -> DatasetError:
    return DatasetError(
        f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position "
        f"{error.start}). Re-save it as UTF-8 (for example 'CSV UTF-8' in Excel, or "
        "'Save with encoding: UTF-8' in your editor)."
    )


def read_text(path: Path) -> str:
    """The text of ``path`` as UTF-8 (a BOM dropped, CRLF read as LF); DatasetError if not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from error


def read_metadata(path: Path) -> list[Row]:
    """The rows of a csv / json / jsonl metadata file."""
    if not path.is_file():
        raise DatasetError(f"metadata file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".json":
        return _check_objects(path, _parse_json(path, read_text(path)))
    if suffix == ".jsonl":
        return _read_jsonl(path)
    raise DatasetError(
        f"metadata file {path} has an unknown format; use one of {', '.join(METADATA_SUFFIXES)}"
    )


def _read_csv(path: Path) -> list[Row]:
    import pandas as pd

    try:
        # Every cell is text: a caption "2024" must not become an int, nor a frame folder
        # "0001" the path "1"; an empty caption stays "" and a caption "None" stays text.
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from error
    except pd.errors.EmptyDataError:
        return []
    except pd.errors.ParserError as error:
        raise DatasetError(f"{path} is not a valid csv file: {error}") from error
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.to_dict("records")


def _parse_json(path: Path, text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {line}" if line is not None else f"line {error.lineno}"
        raise DatasetError(f"{path} ({where}) is not valid JSON: {error.msg}") from error


def _read_jsonl(path: Path) -> list[Row]:
    lines = read_text(path).splitlines()
    rows = [_parse_json(path, text, n) for n, text in enumerate(lines, 1) if text.strip()]
    return _check_objects(path, rows)


def _check_objects(path: Path, rows: Any) -> list[Row]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DatasetError(f"{path} must hold a list of objects (one per sample)")
    return rows


def check_columns(rows: Sequence[Row], required: Iterable[str], source: str) -> None:
    """DatasetError naming the first required column that some row lacks."""
    present = sorted({key for row in rows for key in row})
    for column in required:
        missing = [i for i, row in enumerate(rows) if column not in row]
        if missing:
            where = (
                ""
                if len(missing) == len(rows)
                else f" in {len(missing)} of {len(rows)} rows (first: row {missing[0]})"
            )
            raise DatasetError(
                f"{source} has no column {column!r}{where}; the columns present are "
                f"{', '.join(present) or '(none)'}"
            )
