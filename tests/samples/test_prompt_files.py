"""The ``--sample-prompts`` file: text, TOML and JSON lines, read into per-prompt settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.sample_prompts import SamplePrompt, read_prompt_file
from diffsynth_core.training.sampling import check_family_inputs


def test_plain_text_stays_one_prompt_per_line(tmp_path: Path) -> None:
    file = tmp_path / "prompts.txt"
    file.write_text("a cat\n\n# a comment\n  a dog  \n", encoding="utf-8")
    assert read_prompt_file(file) == [SamplePrompt("a cat"), SamplePrompt("a dog")]


def test_toml_sets_per_prompt_settings_over_file_defaults_and_loads_images(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    Image.new("RGB", (8, 4), (255, 0, 0)).save(tmp_path / "refs" / "red.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "refs" / "blue.png")
    (tmp_path / "pose.json").write_text("{}", encoding="utf-8")
    file = tmp_path / "prompts.toml"
    file.write_text(
        'width = 64\nheight = 32\ncfg_scale = 3\n'
        '[[prompts]]\nprompt = "a cat"\nseed = 7\nsteps = 4\nnegative_prompt = "blurry"\n'
        '[[prompts]]\nprompt = "a dog"\nwidth = 48\ncontrol_image = "refs/red.png"\n'
        'edit_image = ["refs/red.png", "refs/blue.png"]\npose = "pose.json"\nstrength = 0.5\n',
        encoding="utf-8",
    )
    cat, dog = read_prompt_file(file)
    assert cat.settings == {"width": 64, "height": 32, "cfg_scale": 3.0, "seed": 7,
                            "num_inference_steps": 4, "negative_prompt": "blurry"}  # fmt: skip
    assert cat.inputs == {}
    assert dog.settings == {"width": 48, "height": 32, "cfg_scale": 3.0}
    control = dog.inputs["control_image"]
    assert isinstance(control, Image.Image) and control.size == (8, 4)
    assert control.getpixel((0, 0)) == (255, 0, 0)
    assert [image.getpixel((0, 0)) for image in dog.inputs["edit_image"]] == [(255, 0, 0), (0, 0, 255)]
    assert dog.inputs["pose"] == str(tmp_path / "pose.json")  # a file, not an image: its path
    assert dog.inputs["strength"] == 0.5


def test_json_lines_take_objects_and_plain_strings(tmp_path: Path) -> None:
    file = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"prompt": "a cat", "height": 16, "seed": 1}), "", json.dumps("a dog")]
    file.write_text("\n".join(lines), encoding="utf-8")
    assert read_prompt_file(file) == [
        SamplePrompt("a cat", {"height": 16, "seed": 1}),
        SamplePrompt("a dog"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.toml", 'prompt = "x"\n', r"expected \[\[prompts\]\] tables"),
        ("p.toml", "[[prompts]\n", "not valid TOML"),
        ("p.toml", "[[prompts]]\nseed = 1\n", 'prompt 1 needs a "prompt" string'),
        ("p.toml", '[[prompts]]\nprompt = "x"\nsteps = 0\n', "prompt 1: steps must be >= 1, not 0"),
        ("p.toml", '[[prompts]]\nprompt = "x"\nwidth = "64"\n', "prompt 1: width must be int"),
        ("p.jsonl", '{"prompt": "x"}\n{"prompt": ', "line 2 is not JSON"),
        ("p.jsonl", '{"prompt": "x", "control_image": "nosuch.png"}\n', "control_image: no such image"),
    ],
)
def test_a_bad_prompts_file_is_one_error_naming_the_prompt(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    file = tmp_path / name
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        read_prompt_file(file)


class _Strict:
    def __call__(self, prompt: str, height: int = 64, control_image: Any = None) -> None: ...


class _Open:
    def __call__(self, prompt: str, **extra: Any) -> None: ...


def test_a_family_input_the_pipeline_cannot_take_is_refused() -> None:
    fine = SamplePrompt("x", inputs={"control_image": 1})
    check_family_inputs([fine], _Strict())
    check_family_inputs([SamplePrompt("x", inputs={"edit_image": 1})], _Open())  # **extra: passed on
    with pytest.raises(ConfigError, match="prompt 2 sets edit_image, which _Strict does not take"):
        check_family_inputs([fine, SamplePrompt("x", inputs={"edit_image": 1})], _Strict())
