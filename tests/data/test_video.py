"""Video: frame counts (4k+1), sources (mp4, gif, frame folder), lazy reading, errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffsynth_core.data import UnifiedDataset
from diffsynth_core.data import video as video_module
from diffsynth_core.data.files import error_kind
from diffsynth_core.data.operators import ImageCropAndResize, LoadVideo
from diffsynth_core.data.video import (
    frame_indices,
    probe_video_size,
    read_frames,
    save_video,
    valid_frame_count,
)
from diffsynth_core.errors import BadSampleError, ConfigError

from .media import frame_level, gray_frames, solid, write_csv

# Video files need the optional dependencies (pip install imageio imageio-ffmpeg).
imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")


@pytest.fixture(scope="module")
def mp4_20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 frames at 8 fps, frame i at gray level 12 i, written by save_video."""
    return save_video(gray_frames(20), tmp_path_factory.mktemp("v") / "clip.mp4", fps=8)


def levels(frames: list[Image.Image]) -> list[int]:
    return [frame_level(f) for f in frames]


@pytest.mark.parametrize(
    ("available", "expected"), [(0, 0), (1, 1), (4, 1), (5, 5), (8, 5), (9, 9), (81, 81), (100, 97)]
)
def test_valid_frame_count(available: int, expected: int) -> None:
    assert valid_frame_count(available) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_frames": 0}, "num_frames=0"),
        ({"time_division_factor": 4, "time_division_remainder": 4}, "time_division_remainder"),
        ({"frame_rate": 0}, "frame_rate must be positive"),
    ],
)
def test_load_video_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadVideo(**options)


def test_frame_indices_by_timestamp() -> None:
    assert frame_indices(4, 8, None) == [0, 1, 2, 3]
    assert frame_indices(5, 30, 10) == [0, 3, 6, 9, 12]  # every third frame
    assert frame_indices(5, 8, 16) == [0, 0, 1, 1, 2]  # upsampling repeats frames


def test_save_video_writes_a_real_mp4(mp4_20: Path) -> None:
    reader = imageio.get_reader(mp4_20, format="FFMPEG")
    try:
        assert reader.get_meta_data()["fps"] == 8
        assert reader.get_meta_data()["codec"] == "h264"
        assert reader.count_frames() == 20
    finally:
        reader.close()


def test_mp4_first_4k_plus_1_frames(mp4_20: Path) -> None:
    frames = read_frames(mp4_20, 11)  # 11 is not 4k+1: rounded down to 9
    assert len(frames) == 9 and frames[0].size == (32, 32)
    assert levels(frames) == list(range(9))


def test_short_clip_is_cut_to_largest_valid_count(mp4_20: Path) -> None:
    assert levels(read_frames(mp4_20, 81)) == list(range(17))


def test_frame_rate_resampling(mp4_20: Path) -> None:
    assert levels(read_frames(mp4_20, 5, frame_rate=4)) == [0, 2, 4, 6, 8]


def test_only_needed_frames_are_pulled(mp4_20: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = []

    class CountingReader:
        def __init__(self, reader: Any):
            self.reader = reader

        def get_meta_data(self) -> dict[str, Any]:
            return self.reader.get_meta_data()

        def close(self) -> None:
            self.reader.close()

        def __iter__(self) -> Any:
            for frame in self.reader:
                pulled.append(1)
                yield frame

    real_open = video_module._open_ffmpeg
    monkeypatch.setattr(video_module, "_open_ffmpeg", lambda path: CountingReader(real_open(path)))
    assert len(read_frames(mp4_20, 5)) == 5
    assert len(pulled) == 5
    pulled.clear()
    read_frames(mp4_20, 5, frame_rate=4)  # source frames 0, 2, 4, 6, 8
    assert len(pulled) == 9


def test_frame_folder_in_natural_order(tmp_path: Path) -> None:
    for i, frame in enumerate(gray_frames(12)):
        frame.save(tmp_path / f"frame_{i}.png")  # frame_10 must come after frame_9
    (tmp_path / "notes.txt").write_text("ignored")
    assert levels(read_frames(tmp_path, 81)) == list(range(9))


def test_gif(tmp_path: Path) -> None:
    frames = gray_frames(12)
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=125)
    assert levels(read_frames(tmp_path / "a.gif", 5)) == [0, 1, 2, 3, 4]
    assert levels(read_frames(tmp_path / "a.gif", 5, frame_rate=4)) == [
        0,
        2,
        4,
        6,
        8,
    ]  # 8 fps source
    assert levels(read_frames(tmp_path / "a.gif", 9, frame_rate=4)) == [0, 2, 4, 6, 8]  # 6 -> 5
    assert probe_video_size(tmp_path / "a.gif") == (32, 32)


def test_single_image_is_a_one_frame_clip(tmp_path: Path) -> None:
    frames = read_frames(solid(tmp_path / "x.png", (20, 20), (9, 9, 9)), 81)
    assert len(frames) == 1 and frames[0].getpixel((0, 0)) == (9, 9, 9)


def test_too_few_frames(tmp_path: Path) -> None:
    for i, frame in enumerate(gray_frames(3)):
        frame.save(tmp_path / f"{i}.png")
    with pytest.raises(BadSampleError, match=r"3 usable frame\(s\)") as info:
        read_frames(tmp_path, 81, time_division_remainder=0)  # needs 4, 8, ...
    assert error_kind(info.value) == "too few frames"


@pytest.mark.parametrize(
    "content", [b"\x00\x01 not a video at all" * 50, b"\x00\x00\x00\x18ftypmp42"]
)
def test_corrupt_video(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(BadSampleError) as info:
        read_frames(path, 9)
    assert error_kind(info.value) == "corrupt"


def test_missing_and_empty_video(tmp_path: Path) -> None:
    with pytest.raises(BadSampleError, match="does not exist"):
        read_frames(tmp_path / "nope.mp4", 9)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(BadSampleError, match="0 bytes"):
        read_frames(tmp_path / "empty.mp4", 9)


def test_missing_imageio_is_a_clear_config_error(
    mp4_20: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(ConfigError, match="pip install imageio imageio-ffmpeg"):
        read_frames(mp4_20, 5)
    with pytest.raises(ConfigError, match="pip install imageio imageio-ffmpeg"):
        save_video(gray_frames(2), mp4_20.parent / "x.mp4")


def test_load_video_operator_resizes_each_frame(mp4_20: Path) -> None:
    load = LoadVideo(num_frames=5, frame_processor=ImageCropAndResize(height=16, width=16))
    frames = load(mp4_20)
    assert [f.size for f in frames] == [(16, 16)] * 5 and levels(frames) == list(range(5))


def test_video_dataset(mp4_20: Path) -> None:
    base = mp4_20.parent
    write_csv(base / "v.csv", "prompt,video", "a clip,clip.mp4", "gone,missing.mp4")
    dataset = UnifiedDataset(
        base,
        base / "v.csv",
        data_file_keys="video",
        main_data_operator=UnifiedDataset.default_video_operator(
            base, max_pixels=16 * 16, num_frames=9
        ),
    )
    sample = dataset[0]
    assert len(sample["video"]) == 9 and sample["video"][0].size == (16, 16)
    assert dataset[1] is None and dataset.bad_records[0]["kind"] == "missing"
    assert dataset.target_sizes() == [(16, 16), None]


def test_save_video_accepts_arrays_and_odd_sizes(tmp_path: Path) -> None:
    arrays = [np.full((15, 17, 3), 100, np.uint8)] * 3
    out = save_video(arrays, tmp_path / "deep" / "odd.mp4", fps=4)
    assert probe_video_size(out)[0] in (16, 18)


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mkv", "libx264"), (".avi", "mpeg4"), (".mov", "libx264")]
)
def test_other_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    path = tmp_path / f"clip{suffix}"
    with imageio.get_writer(
        path, format="FFMPEG", fps=8, codec=codec, macro_block_size=2
    ) as writer:
        for frame in gray_frames(6):
            writer.append_data(np.asarray(frame))
    assert levels(read_frames(path, 81)) == [0, 1, 2, 3, 4]
