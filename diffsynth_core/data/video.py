"""Video decoding and writing.

Sources: mp4/webm/avi/mkv/mov (imageio's FFMPEG plugin, backed by imageio-ffmpeg), gif (PIL),
a folder of frame images (natural sort order), or a single image (a one-frame clip). Frames are
pulled one at a time and reading stops at the last frame needed, so a long video is never
decoded whole. imageio and imageio-ffmpeg are optional: they are imported only when an ffmpeg
file is read or written.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence

from ..errors import ConfigError, MissingDependencyError
from .files import GIF_EXTENSIONS, IMAGE_EXTENSIONS, bad_sample, check_file, frame_files
from .images import DEFAULT_PIXEL_LIMIT, header_size, open_image, read_image, to_rgb

_INSTALL_HINT = "pip install imageio imageio-ffmpeg"


@dataclass
class VideoSource:
    """An opened clip: its frame rate (None when unknown) and a lazy iterator of RGB frames."""

    fps: float | None
    frames: Iterator[Image.Image]
    close: Callable[[], None] = lambda: None


def valid_frame_count(available: int, factor: int = 4, remainder: int = 1) -> int:
    """The largest n <= ``available`` with n % factor == remainder and n >= 1; 0 if none."""
    if available < max(remainder, 1):
        return 0
    count = available - (available - remainder) % factor
    return count if count >= 1 else 0


def check_frame_options(
    num_frames: int, factor: int, remainder: int, frame_rate: float | None
) -> None:
    """ConfigError unless the options allow at least one valid frame count."""
    if factor < 1 or not 0 <= remainder < factor:
        raise ConfigError(
            f"time_division_factor must be >= 1 and 0 <= time_division_remainder < it "
            f"(got {factor} and {remainder})"
        )
    if valid_frame_count(num_frames, factor, remainder) == 0:
        raise ConfigError(
            f"num_frames={num_frames} allows no clip length n with n % {factor} == {remainder}"
        )
    if frame_rate is not None and frame_rate <= 0:
        raise ConfigError(f"frame_rate must be positive, not {frame_rate}")


def frame_indices(count: int, source_fps: float | None, frame_rate: float | None) -> list[int]:
    """Source frame index shown at each of ``count`` output timestamps k / frame_rate.

    Without a target rate (or when the source rate is unknown) frames are taken one by one.
    Frames repeat when the target rate is above the source's.
    """
    if not frame_rate or not source_fps:
        return list(range(count))
    return [math.floor(k * source_fps / frame_rate + 1e-6) for k in range(count)]


def iter_picked(frames: Iterable[Image.Image], indices: Sequence[int]) -> Iterator[Image.Image]:
    """The frames at ``indices`` (sorted, may repeat), pulling no frame past the last one."""
    if not indices:
        return
    position = 0
    for index, frame in enumerate(frames):
        while position < len(indices) and indices[position] == index:
            yield frame
            position += 1
        if position == len(indices) or index >= indices[-1]:
            break


def pick_frames(frames: Iterable[Image.Image], indices: Sequence[int]) -> list[Image.Image]:
    """The frames at ``indices`` as a list (see :func:`iter_picked`)."""
    return list(iter_picked(frames, indices))


def open_video(path: Path, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> VideoSource:
    """Open ``path`` (video file, gif, frame folder or single image) as a :class:`VideoSource`."""
    if path.is_dir():
        return _folder_source(path, pixel_limit)
    check_file(path)
    suffix = path.suffix.lower()
    if suffix in GIF_EXTENSIONS:
        return _gif_source(path, pixel_limit)
    if suffix in IMAGE_EXTENSIONS:
        return VideoSource(None, iter([read_image(path, pixel_limit)]))
    return _ffmpeg_source(path, pixel_limit)


def _folder_source(folder: Path, pixel_limit: int) -> VideoSource:
    files = frame_files(folder)
    if not files:
        raise bad_sample("missing", "frame folder holds no image files", path=folder)
    return VideoSource(None, (read_image(f, pixel_limit) for f in files))


def _gif_source(path: Path, pixel_limit: int) -> VideoSource:
    try:
        image = open_image(path, pixel_limit)  # refuses a bomb before any frame is decoded
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise bad_sample("corrupt", f"cannot open gif: {error}", path=path) from error
    # A GIF's frame rate comes from its first frame's duration (ms); most GIFs are constant.
    duration = image.info.get("duration") or 100
    frames = (to_rgb(frame.convert("RGBA")) for frame in ImageSequence.Iterator(image))
    return VideoSource(1000.0 / duration, _guarded(frames, path), image.close)


def _require_imageio() -> Any:
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  # the FFMPEG plugin needs it; fail here, clearly
    except ImportError as error:
        raise MissingDependencyError(
            f"reading and writing video files needs imageio and imageio-ffmpeg ({error}); "
            f"install them with: {_INSTALL_HINT}"
        ) from error
    return imageio


def _open_ffmpeg(path: Path) -> Any:
    """imageio's FFMPEG reader for ``path`` (a seam tests use to count frames pulled)."""
    return _require_imageio().get_reader(os.fspath(path), format="FFMPEG")


def _ffmpeg_source(path: Path, pixel_limit: int) -> VideoSource:
    try:
        reader = _open_ffmpeg(path)
        meta = reader.get_meta_data()
    except ConfigError:
        raise
    except Exception as error:  # imageio raises OSError, RuntimeError, IndexError ...
        raise bad_sample("corrupt", f"cannot open video: {ffmpeg_reason(error)}", path=path) from error
    width, height = meta.get("size") or (0, 0)
    if width * height > pixel_limit:
        reader.close()
        raise bad_sample(
            "too large", f"video frames are {width}x{height}, above {pixel_limit} px", path=path
        )
    frames = (Image.fromarray(np.asarray(frame)[..., :3]) for frame in _guarded(reader, path))
    return VideoSource(meta.get("fps"), frames, reader.close)


# ffmpeg's stderr: a build banner (version, configuration, library versions: ~2.6 KB), stream
# descriptions, progress; the diagnostics are the other lines, often tagged "[in#0 @ 0x55..]".
_FFMPEG_CHATTER = (
    "ffmpeg version", "Input #", "Output #", "Stream mapping", "Press [q]", "frame=", "Consider ",
)
_FFMPEG_TAG = re.compile(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*")
_REASON_LIMIT = 300


def ffmpeg_reason(error: BaseException) -> str:
    """An imageio/ffmpeg error as one line: its own message and ffmpeg's diagnostics, no banner."""
    head, _, stderr = str(error).partition("=== stderr ===")
    lines = [head.strip()] if head.strip() else []
    for line in stderr.splitlines():
        if not line.strip() or line[0].isspace() or line.startswith(_FFMPEG_CHATTER):
            continue  # the banner and stream descriptions are indented, or start like these
        line = _FFMPEG_TAG.sub("", line).strip()
        if line and line not in lines:
            lines.append(line)
    reason = " ".join(lines[:1]) + (f" (ffmpeg: {'; '.join(lines[1:])})" if lines[1:] else "")
    reason = " ".join(reason.split())  # one line whatever imageio wrapped
    return reason if len(reason) <= _REASON_LIMIT else reason[: _REASON_LIMIT - 3] + "..."


def _guarded(frames: Iterable[Any], path: Path) -> Iterator[Any]:
    """``frames``, with a decoding failure mid-stream turned into a BadSampleError."""
    try:
        yield from frames
    except Exception as error:
        raise bad_sample("corrupt", f"cannot decode video: {ffmpeg_reason(error)}", path=path) from error


def read_frames(
    path: Path,
    num_frames: int,
    *,
    time_division_factor: int = 4,
    time_division_remainder: int = 1,
    frame_rate: float | None = None,
    pixel_limit: int = DEFAULT_PIXEL_LIMIT,
) -> list[Image.Image]:
    """The first valid-length run of frames of ``path`` (at ``frame_rate`` if given).

    ``num_frames`` is first rounded down to a valid count (n % factor == remainder); a clip
    shorter than that is cut to the largest valid count it holds.
    """
    wanted = valid_frame_count(num_frames, time_division_factor, time_division_remainder)
    source = open_video(path, pixel_limit)
    try:
        frames = pick_frames(source.frames, frame_indices(wanted, source.fps, frame_rate))
    finally:
        source.close()
    usable = _usable(len(frames), time_division_factor, time_division_remainder, path)
    return frames[:usable]


def check_clip(
    path: Path,
    num_frames: int,
    *,
    time_division_factor: int = 4,
    time_division_remainder: int = 1,
    frame_rate: float | None = None,
    pixel_limit: int = DEFAULT_PIXEL_LIMIT,
) -> tuple[int, int]:
    """Decode the frames :func:`read_frames` would return, keeping none; their (width, height).

    The same BadSampleErrors as :func:`read_frames` (corrupt, truncated, too few frames), at
    the memory cost of one frame: this is what ``--check-data`` runs on every clip.
    """
    wanted = valid_frame_count(num_frames, time_division_factor, time_division_remainder)
    source = open_video(path, pixel_limit)
    count, size = 0, (0, 0)
    try:
        for frame in iter_picked(source.frames, frame_indices(wanted, source.fps, frame_rate)):
            count, size = count + 1, frame.size
    finally:
        source.close()
    _usable(count, time_division_factor, time_division_remainder, path)
    return size


def _usable(count: int, factor: int, remainder: int, path: Path) -> int:
    """The valid clip length within ``count`` frames; BadSampleError when there is none."""
    usable = valid_frame_count(count, factor, remainder)
    if usable == 0:
        raise bad_sample(
            "too few frames",
            f"clip has {count} usable frame(s); it needs a count n with "
            f"n % {factor} == {remainder}",
            path=path,
        )
    return usable


def probe_video_size(path: Path, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> tuple[int, int]:
    """(width, height) of a clip's frames, reading as little as the format allows."""
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise bad_sample("missing", "frame folder holds no image files", path=path)
        return header_size(files[0], pixel_limit)
    check_file(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS | GIF_EXTENSIONS:
        return header_size(path, pixel_limit)
    source = _ffmpeg_source(path, pixel_limit)
    try:
        first = next(source.frames, None)
    finally:
        source.close()
    if first is None:
        raise bad_sample("too few frames", "video holds no frames", path=path)
    return first.size


def save_video(
    frames: Sequence[Image.Image | np.ndarray],
    path: str | os.PathLike[str],
    fps: float = 16,
    *,
    quality: float = 8.0,
) -> Path:
    """Write ``frames`` (PIL images or HxWx3 uint8 arrays) as an mp4 through imageio-ffmpeg."""
    if not frames:
        raise ValueError("save_video got no frames")
    imageio = _require_imageio()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=2: libx264's yuv420p needs even sizes; 16 (the default) would resize.
    with imageio.get_writer(
        os.fspath(out), format="FFMPEG", fps=fps, quality=quality, macro_block_size=2
    ) as writer:
        for frame in frames:
            writer.append_data(
                np.asarray(frame.convert("RGB") if isinstance(frame, Image.Image) else frame)
            )
    return out
