"""Family options from extra command-line flags and config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffsynth_core.cli.run.family_options import family_values, split_family_args
from diffsynth_core.errors import ConfigError
from diffsynth_core.registry import FamilyOption

OPTIONS = [
    FamilyOption("control_image", "image", help="control image"),
    FamilyOption("strength", "float", default=1.0),
    FamilyOption("tiled", "bool"),
    FamilyOption("frames", "int"),
]


def test_flags_values_and_booleans() -> None:
    raw = split_family_args(
        ["--strength", "0.5", "--tiled", "--frames=9"], OPTIONS, "fam", "generate"
    )
    assert raw == {"strength": "0.5", "tiled": True, "frames": "9"}
    assert split_family_args(["--no-tiled"], OPTIONS, "fam", "generate") == {"tiled": False}
    assert family_values(OPTIONS, raw) == {"strength": 0.5, "tiled": True, "frames": 9}
    assert family_values(OPTIONS, {}) == {"strength": 1.0}  # declared defaults fill in


def test_image_options_load_the_file(tmp_path: Path) -> None:
    from diffsynth_core.testing import make_image

    make_image((10, 20, 30), (24, 16)).save(tmp_path / "c.png")
    image = family_values(OPTIONS, {"control_image": str(tmp_path / "c.png")})["control_image"]
    assert image.size == (24, 16) and image.mode == "RGB"
    with pytest.raises(ConfigError, match="does not exist"):
        family_values(OPTIONS, {"control_image": str(tmp_path / "missing.png")})


def test_a_repeated_images_flag_adds_each_file_in_order(tmp_path: Path) -> None:
    from diffsynth_core.testing import make_image

    options = [FamilyOption("edit_image", "images"), FamilyOption("strength", "float")]
    for name, size in (("a", (8, 8)), ("b", (16, 8)), ("c", (8, 16))):
        make_image((10, 20, 30), size).save(tmp_path / f"{name}.png")
    a, b, c = (str(tmp_path / f"{n}.png") for n in "abc")
    args = ["--edit-image", a, "--strength", "1", "--edit-image", f"{b},{c}", "--strength=2"]
    raw = split_family_args(args, options, "fam", "generate")
    assert raw == {"edit_image": f"{a},{b},{c}", "strength": "2"}  # other flags: last wins
    images = family_values(options, raw)["edit_image"]
    assert [im.size for im in images] == [(8, 8), (16, 8), (8, 16)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strenght", "1"],
            r"'--strenght' is not an option of `diffsynth generate` nor of family 'fam'.*--strength \(float\)",
        ),
        (["--strength"], "--strength needs a value"),
        (["--no-strength"], "is not an option"),
        (["--frames", "many"], "--frames 'many': not a valid int"),
    ],
)
def test_mistakes_are_config_errors_listing_the_options(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        family_values(OPTIONS, split_family_args(args, OPTIONS, "fam", "generate"))
