"""Per-prompt family inputs in a plain-text --sample-prompts file (a JSON-object line: an edit
family's images), read by the one prompts-file reader (training/sample_prompts.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.sample_prompts import SamplePrompt
from diffsynth_core.training.sampling import SampleRenderer, check_family_inputs, read_prompts


def test_a_json_line_carries_family_inputs_loaded_beside_the_file(tmp_path: Path) -> None:
    from diffsynth_core.testing import make_image

    (tmp_path / "in").mkdir()
    make_image((200, 10, 10), (24, 16)).save(tmp_path / "in" / "a.png")
    make_image((10, 200, 10), (16, 16)).save(tmp_path / "in" / "b.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# comment\nplain prompt\n"
        '{"prompt": "make it blue", "edit_image": ["in/a.png", "in/b.png"], "steps": 3}\n'
        '{"prompt": "again", "edit_image": "in/b.png"}\n'
    )
    entries = read_prompts(prompts)
    assert [e.prompt for e in entries] == ["plain prompt", "make it blue", "again"]
    assert entries[0].inputs == {} and entries[1].settings == {"num_inference_steps": 3}
    assert [im.size for im in entries[1].inputs["edit_image"]] == [(24, 16), (16, 16)]
    assert entries[2].inputs["edit_image"].size == (16, 16)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "x", "edit_image": "missing.png"}', "no such image"),
        ('{"edit_image": "a.png"}', 'needs a "prompt" string'),
        ('{"prompt": "x",}', "line 1 is not JSON"),
    ],
)
def test_a_bad_json_line_is_one_config_error(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "prompts.txt").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        read_prompts(tmp_path / "prompts.txt")


def test_an_input_the_pipeline_does_not_take_is_refused_before_the_run() -> None:
    class Pipe:
        def __call__(self, prompt: str, edit_image: Any = None, seed: int = 0) -> None: ...

    check_family_inputs([SamplePrompt("x", {}, {"edit_image": 1})], Pipe())
    with pytest.raises(ConfigError, match="edit_imag.*does not take"):
        check_family_inputs([SamplePrompt("x", {}, {"edit_imag": 1})], Pipe())


def test_the_renderer_passes_the_inputs_to_the_pipeline(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    class Result:
        def save(self, path: Any, format: str) -> None:
            Path(path).write_bytes(b"png")

    def pipe(**kwargs: Any) -> Result:
        calls.append(kwargs)
        return Result()

    prompts = [SamplePrompt("plain"), SamplePrompt("edit", {}, {"edit_image": "IMG"})]
    renderer = SampleRenderer(prompts, 1, tmp_path, 32, 32)
    renderer.folder.mkdir(parents=True)
    for index, prompt in enumerate(renderer.prompts):
        renderer._one(pipe, 0, index, prompt)  # type: ignore[arg-type]
    assert calls[0]["prompt"] == "plain" and "edit_image" not in calls[0]
    assert calls[1]["prompt"] == "edit" and calls[1]["edit_image"] == "IMG"
    assert calls[1]["seed"] == 1 and calls[1]["height"] == 32


def test_a_sample_clip_reaches_the_trackers_as_a_strip_of_its_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trackers take images: a video family's sample goes to them as 4 evenly spaced frames
    (first and last included) side by side; the .mp4 is written as before."""
    from PIL import Image

    from diffsynth_core.training.sampling import frame_strip

    frames = [Image.new("RGB", (8, 6), (i * 20, 0, 0)) for i in range(9)]
    strip = frame_strip(frames)
    assert strip.size == (32, 6)
    assert [strip.getpixel((x * 8 + 1, 1))[0] for x in range(4)] == [0, 60, 100, 160]  # 0, 3, 5, 8
    assert frame_strip(frames[:2]).size == (16, 6)  # a short clip: each frame once

    logged: dict[str, Any] = {}

    class Trackers:
        def log_images(self, images: dict[str, Any], step: int) -> None:
            logged.update(images)

    class Progress:
        trackers = Trackers()

        def paused(self, label: str) -> Any:
            from contextlib import nullcontext

            return nullcontext()

    class Pipe:
        def __call__(self, **kwargs: Any) -> list[Any]:
            return frames

    class Module(torch.nn.Module):
        pipe = Pipe()

    class Accelerator:
        is_main_process = True

        def unwrap_model(self, model: Any) -> Any:
            return model

        def autocast(self) -> Any:
            from contextlib import nullcontext

            return nullcontext()

        def wait_for_everyone(self) -> None:
            pass

    from contextlib import nullcontext

    import diffsynth_core.data.video as video
    from diffsynth_core.training import sampling

    saved: dict[str, Path] = {}
    monkeypatch.setattr(video, "save_video", lambda result, path: saved.setdefault("mp4", path))
    monkeypatch.setattr(sampling, "untouched_training_state", lambda pipe: nullcontext())
    renderer = SampleRenderer([SamplePrompt("a clip")], 1, tmp_path, 6, 8)
    renderer.progress = Progress()
    renderer.render(Accelerator(), Module(), 3)  # type: ignore[arg-type]
    assert saved["mp4"].suffix == ".mp4"
    assert logged["samples/0"].size == (32, 6)
