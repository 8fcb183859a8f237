"""A dataset without a metadata file: media files, each captioned by its same-named text file.

The pairing is by name, never by position: ``photos/cat.png`` is captioned by
``photos/cat.txt`` (same folder, same stem, the caption extension instead of the image's), and
nothing else. What does not pair is reported, never used to fill a gap:

* an image with no caption file trains with an empty prompt (as kohya's sd-scripts do), and is
  counted and named in a note, so a forgotten caption is visible, not silently dropped; a folder
  in which *no* image has a caption is refused (that is a wrong folder, not a style choice);
* images sharing a stem (``cat.png`` and ``cat.jpg``) each get ``cat.txt``: it is named like
  both of them; the note says so, as they may be the same picture twice;
* a caption file that matches no image (``LICENSE.txt``, ``notes.txt``) is listed as unpaired;
* files and folders whose name starts with a dot (``.ipynb_checkpoints``, ``.DS_Store``) are
  not part of the dataset.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DatasetError
from .files import GIF_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .metadata import Row, read_text

logger = logging.getLogger(__name__)

DEFAULT_CAPTION_EXTENSION = ".txt"
_SHOWN = 5  # names listed per note; the count is always complete


def _names(paths: list[str]) -> str:
    shown = ", ".join(paths[:_SHOWN])
    return shown + (f" ... ({len(paths) - _SHOWN} more)" if len(paths) > _SHOWN else "")


@dataclass
class FolderScan:
    """The rows of a captioned folder, and what did not pair (relative POSIX paths)."""

    rows: list[Row] = field(default_factory=list)
    uncaptioned: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)
    shared: dict[str, list[str]] = field(default_factory=dict)
    caption_extension: str = DEFAULT_CAPTION_EXTENSION

    def notes(self) -> list[str]:
        """One sentence per kind of irregularity, for the log and ``--check-data``."""
        ext, notes = self.caption_extension, []
        if self.uncaptioned:
            notes.append(
                f"{len(self.uncaptioned)} file(s) have no {ext} caption and train with an "
                f"empty prompt: {_names(self.uncaptioned)}"
            )
        if self.shared:
            pairs = [f"{caption} ({', '.join(files)})" for caption, files in self.shared.items()]
            notes.append(
                f"{len(self.shared)} caption(s) are named like several files, which all get "
                f"it: {_names(pairs)}"
            )
        if self.unpaired:
            notes.append(
                f"{len(self.unpaired)} {ext} file(s) match no media file and are not used: "
                f"{_names(self.unpaired)}"
            )
        return notes


def check_caption_extension(extension: str) -> str:
    """``extension`` if it is a usable caption suffix (``.txt``, ``.caption``); ConfigError if not."""
    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | GIF_EXTENSIONS
    if not extension.startswith(".") or len(extension) < 2 or extension.lower() in media:
        raise ConfigError(
            f"caption_extension must be a suffix such as '.txt' or '.caption', not {extension!r}"
        )
    return extension


def _visible_files(base_path: Path) -> list[Path]:
    """Every file under ``base_path`` except hidden ones (or inside hidden folders), sorted."""
    files = []
    for path in base_path.rglob("*"):
        relative = path.relative_to(base_path)
        if not any(part.startswith(".") for part in relative.parts) and path.is_file():
            files.append(path)
    return sorted(files)


def scan_folder(
    base_path: Path,
    media_column: str = "image",
    caption_extension: str = DEFAULT_CAPTION_EXTENSION,
) -> FolderScan:
    """Rows ``{media_column: "sub/a.png", "prompt": <text of sub/a.txt>}`` for a folder.

    ``media_column`` named ``video`` (or ending in ``_video``) collects video files and gifs,
    any other column images. See the module docstring for what does not pair.
    """
    is_video = media_column == "video" or media_column.endswith("_video")
    suffixes = VIDEO_EXTENSIONS | GIF_EXTENSIONS if is_video else IMAGE_EXTENSIONS
    files = _visible_files(base_path)
    media = [p for p in files if p.suffix.lower() in suffixes]
    captions = {p for p in files if p.suffix == caption_extension}
    scan = FolderScan(caption_extension=caption_extension)
    users: dict[Path, list[str]] = defaultdict(list)
    for file in media:
        relative = file.relative_to(base_path).as_posix()
        caption = file.with_suffix(caption_extension)
        if caption in captions:
            users[caption].append(relative)
            prompt = read_text(caption).strip()
        else:
            scan.uncaptioned.append(relative)
            prompt = ""
        scan.rows.append({media_column: relative, "prompt": prompt})
    scan.unpaired = [p.relative_to(base_path).as_posix() for p in sorted(captions - set(users))]
    scan.shared = {
        c.relative_to(base_path).as_posix(): names for c, names in users.items() if len(names) > 1
    }
    if media and not users:
        raise DatasetError(
            f"no file in {base_path} has a same-named {caption_extension} caption "
            f"({len(media)} media file(s), e.g. {_names(scan.uncaptioned)}); add captions "
            "(cat.png -> cat.txt) or a metadata.csv"
        )
    for note in scan.notes():
        logger.warning("%s: %s", base_path, note)
    return scan
