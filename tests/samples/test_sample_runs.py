"""A run's samples follow each prompt's settings, reproduce by seed, and reach the trackers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image, ImageChops

from diffsynth_core.cli.main import build_cli


@pytest.mark.slow
def test_per_prompt_settings_reach_the_pipeline_and_the_sample_files(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsynth_core.testing import make_image_dataset
    from diffsynth_core.testing.toy import ToyPipeline

    calls: list[dict[str, Any]] = []
    real = ToyPipeline.__call__

    def spy(self: Any, prompt: str, **kwargs: Any) -> Any:
        calls.append({"prompt": prompt, **kwargs})
        return real(self, prompt, **kwargs)

    monkeypatch.setattr(ToyPipeline, "__call__", spy)
    data = make_image_dataset(tmp_path / "data", 2, 32)
    Image.new("RGB", (32, 32), (250, 10, 10)).save(tmp_path / "ref.png")
    prompts = tmp_path / "prompts.toml"
    prompts.write_text(
        'steps = 2\n'
        '[[prompts]]\nprompt = "a cat"\nwidth = 48\nheight = 32\nseed = 5\n'
        '[[prompts]]\nprompt = "a cat"\nwidth = 48\nheight = 32\nseed = 5\n'  # the same seed
        '[[prompts]]\nprompt = "a cat"\nwidth = 48\nheight = 32\nseed = 6\n'
        '[[prompts]]\nprompt = "a dog"\nheight = 16\nsteps = 3\ncfg_scale = 2.5\n'
        'negative_prompt = "blurry"\ninit_image = "ref.png"\ndenoising_strength = 0.5\n',
        encoding="utf-8",
    )
    out = tmp_path / "run"
    flags = ["train", "--model", "toy", "--model-path", str(tiny_toy), "--dataset", str(data),
             "--output", str(out), "--height", "32", "--width", "32", "--max-steps", "1",
             "--sample-prompts", str(prompts)]  # fmt: skip
    done = CliRunner().invoke(build_cli(), flags)
    assert done.exit_code == 0, done.output

    first = calls[:4]  # before training (then again after it)
    assert [(c["width"], c["height"], c["seed"], c["num_inference_steps"]) for c in first] == [
        (48, 32, 5, 2), (48, 32, 5, 2), (48, 32, 6, 2), (32, 16, 3, 3),  # run's width, seed 0 + 3
    ]  # fmt: skip
    dog = first[3]
    assert (dog["cfg_scale"], dog["negative_prompt"], dog["denoising_strength"]) == (2.5, "blurry", 0.5)
    assert isinstance(dog["init_image"], Image.Image)
    assert dog["init_image"].getpixel((0, 0)) == (250, 10, 10)

    files = [Image.open(out / "samples" / f"step-000000-{i}.png") for i in range(4)]
    assert [f.size for f in files] == [(48, 32), (48, 32), (48, 32), (32, 16)]
    same = ImageChops.difference(files[0].convert("RGB"), files[1].convert("RGB")).getbbox()
    other = ImageChops.difference(files[0].convert("RGB"), files[2].convert("RGB")).getbbox()
    assert same is None and other is not None  # seed 5 twice: one image; seed 6: another

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "run"))
    events.Reload()
    assert sorted(events.Tags()["images"]) == [f"samples/{i}" for i in range(4)]
    logged = events.Images("samples/3")
    assert [(e.step, e.width, e.height) for e in logged] == [(0, 32, 16), (1, 32, 16)]
