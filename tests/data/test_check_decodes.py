"""--check-data decodes what it checks: a row it passes is a row training loads.

A truncated PNG keeps a valid header, and a truncated or text "MP4" is a file of the right
name and size: a header-only pass let them through and training then refused them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from diffsynth_core.data import UnifiedDataset, validate
from diffsynth_core.data.video import save_video
from diffsynth_core.errors import BadSampleError

from .media import gray_frames, write_csv


def noise_png(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A PNG that does not compress away: cutting its end cuts pixel data."""
    Image.frombytes(
        "RGB", size, bytes((i * 7919) % 251 for i in range(size[0] * size[1] * 3))
    ).save(path)
    return path


def loads(dataset: UnifiedDataset, row: int) -> bool:
    try:
        dataset.load(row)
    except BadSampleError:
        return False
    return True


@pytest.fixture
def images(tmp_path: Path) -> UnifiedDataset:
    good = noise_png(tmp_path / "good.png")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    (tmp_path / "cut_end.png").write_bytes(data[:-12])  # only IEND gone: PIL decodes it all
    write_csv(tmp_path / "m.csv", "prompt,image", "p,good.png", "p,cut.png", "p,cut_end.png")
    return UnifiedDataset(tmp_path, tmp_path / "m.csv")


def test_a_truncated_png_is_refused(images: UnifiedDataset) -> None:
    assert validate(images, decode=False).ok_rows == [0, 1, 2]  # what the header pass saw
    report = validate(images)
    assert report.ok_rows == [0, 2] and report.refused_rows == [1]
    assert report.refused[0]["kind"] == "truncated"
    assert [loads(images, row) for row in range(3)] == [True, False, True]  # the same verdicts


@pytest.fixture
def clips(tmp_path: Path) -> UnifiedDataset:
    pytest.importorskip("imageio_ffmpeg")
    save_video(gray_frames(9), tmp_path / "good.mp4", fps=8)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov (at the end) lost
    (tmp_path / "text.mp4").write_text("this is not a video, only its name says so\n")
    (tmp_path / "three").mkdir()
    for index, frame in enumerate(gray_frames(3)):
        frame.save(tmp_path / "three" / f"{index}.png")
    rows = ("p,good.mp4", "p,cut.mp4", "p,text.mp4", "p,three")
    write_csv(tmp_path / "m.csv", "prompt,video", *rows)
    operator = UnifiedDataset.default_video_operator(
        tmp_path, num_frames=8, time_division_factor=4, time_division_remainder=0
    )  # clips of 4 or 8 frames: the 3-frame folder has too few
    return UnifiedDataset(
        tmp_path, tmp_path / "m.csv", data_file_keys="video", main_data_operator=operator
    )


def test_truncated_and_text_videos_and_short_clips_are_refused(clips: UnifiedDataset) -> None:
    assert validate(clips, decode=False).ok_rows == [0, 1, 2, 3]
    report = validate(clips)
    assert report.ok_rows == [0]
    assert [(r["row"], r["kind"]) for r in report.refused] == [
        (1, "corrupt"),
        (2, "corrupt"),
        (3, "too few frames"),
    ]
    assert [loads(clips, row) for row in range(4)] == [True, False, False, False]


def test_a_corrupt_video_reason_keeps_ffmpeg_diagnostics_not_its_banner(
    clips: UnifiedDataset,
) -> None:
    for record in validate(clips).refused[:2]:
        reason = record["reason"]
        assert reason.startswith("cannot open video: ")
        assert "\n" not in reason and len(reason) <= 400
        assert "ffmpeg version" not in reason and "--enable-" not in reason
        assert "Invalid data found when processing input" in reason  # ffmpeg's own diagnosis


def test_any_decoding_failure_is_refused_as_training_counts_it(
    images: UnifiedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsynth_core.data import probe

    def broken_decoder(path: Path, pixel_limit: int) -> None:
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr(probe, "read_image", broken_decoder)
    report = validate(images)
    assert report.ok_rows == [] and {r["kind"] for r in report.refused} == {"RuntimeError"}
