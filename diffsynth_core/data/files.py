"""Files of a dataset: which extensions mean what, path containment, per-sample error kinds.

Every path a dataset reads is checked here first: it must resolve (after symlinks) inside the
dataset folder, exist, and not be empty. Failures are :class:`BadSampleError` with a short
``kind`` (``"missing"``, ``"outside dataset"`` ...) so a bad-sample log can count them by kind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import BadSampleError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v"})
GIF_EXTENSIONS = frozenset({".gif"})

PathLike = str | os.PathLike[str]


def bad_sample(kind: str, message: str, *, path: PathLike | None = None) -> BadSampleError:
    """A :class:`BadSampleError` tagged with ``kind``, the key bad-sample summaries count by."""
    return BadSampleError(message, path=None if path is None else str(path), kind=kind)


def error_kind(error: BaseException) -> str:
    """The ``kind`` of a bad-sample error; other exceptions are counted by their type name."""
    return getattr(error, "kind", None) or type(error).__name__


def is_empty_value(value: object) -> bool:
    """True for cells that hold no path: None, NaN, or blank text."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN from pandas
        return True
    return isinstance(value, str) and not value.strip()


def resolve_inside(base_path: PathLike, value: object) -> Path:
    """``value`` (relative to ``base_path``, or absolute) resolved, refused if it leaves the base.

    Symlinks are followed before the check, so a link inside the folder that points outside it
    is refused too: a metadata file must not be able to make training read arbitrary files.
    """
    if is_empty_value(value):
        raise bad_sample("empty value", "the cell holds no file path")
    if not isinstance(value, (str, os.PathLike)):
        raise bad_sample("empty value", f"expected a file path, got {type(value).__name__}")
    base = Path(base_path).expanduser().resolve()
    candidate = Path(os.fspath(value).strip()).expanduser()
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise bad_sample(
            "outside dataset",
            f"the path resolves to {resolved}, outside the dataset folder {base}; "
            "copy the file into the dataset folder or choose a base_path that contains it",
            path=value,
        )
    return resolved


def check_file(path: Path) -> Path:
    """``path`` if it is an existing, non-empty file; a BadSampleError otherwise."""
    if not path.exists():
        raise bad_sample("missing", "file does not exist", path=path)
    if not path.is_file():
        raise bad_sample("missing", "expected a file, found a folder", path=path)
    if path.stat().st_size == 0:
        raise bad_sample("empty file", "file is empty (0 bytes)", path=path)
    return path


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that puts ``frame_2`` before ``frame_10`` (numbers compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in natural order."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))
