"""Atomic file and folder writes: a crash during a save never leaves a truncated newest file.

Every write goes to a temporary name in the same folder (so the final rename never crosses a
file system), is flushed and fsync'd, then renamed over the target with ``os.replace`` (atomic
on POSIX and Windows), and the folder itself is fsync'd so the rename survives a power cut.
Temporary names start with ``.tmp-`` and are removed on failure; :func:`clean_temporaries`
removes those a killed process left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def fsync_path(path: Path) -> None:
    """fsync one file, or a folder's entry table (a no-op where folders can't be opened)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # Windows cannot open folders; its renames are durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    return path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then move it to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def clean_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.tmp-*`` files and folders a killed save left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for item in folder.glob(TMP_PREFIX + "*"):
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item)
    return removed
