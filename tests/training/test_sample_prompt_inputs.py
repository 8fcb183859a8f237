"""Per-prompt family inputs in the --sample-prompts file (a JSON line: an edit family's image)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from diffsynth_core.cli.run.build import sample_prompts
from diffsynth_core.errors import ConfigError
from diffsynth_core.registry import FamilyOption
from diffsynth_core.training.sampling import SampleRenderer

FAMILY = SimpleNamespace(
    name="fam",
    options_for=lambda command: [
        FamilyOption("edit_image", "images", command="generate"),
        FamilyOption("strength", "float"),
    ],
)


def test_a_json_line_carries_family_inputs_loaded_beside_the_file(tmp_path: Path) -> None:
    from diffsynth_core.testing import make_image

    (tmp_path / "in").mkdir()
    make_image((200, 10, 10), (24, 16)).save(tmp_path / "in" / "a.png")
    make_image((10, 200, 10), (16, 16)).save(tmp_path / "in" / "b.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# comment\nplain prompt\n"
        '{"prompt": "make it blue", "edit_image": ["in/a.png", "in/b.png"], "strength": "0.5"}\n'
        '{"prompt": "again", "edit_image": "in/b.png"}\n'
    )
    entries = sample_prompts(str(prompts), FAMILY)
    assert entries[0] == "plain prompt"
    assert entries[1]["prompt"] == "make it blue" and entries[1]["strength"] == 0.5
    assert [im.size for im in entries[1]["edit_image"]] == [(24, 16), (16, 16)]
    assert [im.size for im in entries[2]["edit_image"]] == [(16, 16)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "x", "edit_imag": "a.png"}', "'edit_imag' is not a generate option"),
        ('{"prompt": "x", "edit_image": "missing.png"}', "does not exist"),
        ('{"edit_image": "a.png"}', 'needs "prompt"'),
        ('{"prompt": "x",}', "line 1: not JSON"),
    ],
)
def test_a_bad_json_line_is_one_config_error(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "prompts.txt").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        sample_prompts(str(tmp_path / "prompts.txt"), FAMILY)


def test_the_renderer_passes_the_inputs_to_the_pipeline(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    class Result:
        def save(self, path: Any, format: str) -> None:
            Path(path).write_bytes(b"png")

    def pipe(**kwargs: Any) -> Result:
        calls.append(kwargs)
        return Result()

    renderer = SampleRenderer(
        ["plain", {"prompt": "edit", "edit_image": "IMG"}], 1, tmp_path, 32, 32
    )
    renderer.folder.mkdir(parents=True)
    for index, prompt in enumerate(renderer.prompts):
        renderer._one(pipe, 0, index, prompt)  # type: ignore[arg-type]
    assert calls[0]["prompt"] == "plain" and "edit_image" not in calls[0]
    assert calls[1]["prompt"] == "edit" and calls[1]["edit_image"] == "IMG"
    assert calls[1]["seed"] == 1 and calls[1]["height"] == 32
