"""What the CLI tells a user before anything runs: family options in ``--help``, training
defaults in ``diffsynth models``, the package to install for a missing family, and a warning
for a misspelt ``DIFFSYNTH_LOAD_PLUGINS`` name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from plugin_fakes import family_plugin

from diffsynth_core.cli.main import build_cli
from diffsynth_core.errors import UnknownModelError
from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager
from diffsynth_core.registry import FIRST_PARTY_FAMILIES, FamilyRegistry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy_cli(toy_manager):  # type: ignore[no-untyped-def]
    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(build_cli(toy_manager), list(args))

    return invoke


@pytest.mark.parametrize(
    ("command", "shown", "hidden"),
    [
        (
            "generate",
            ["--init-image IMAGE", "start from this image", "--denoising-strength FLOAT"],
            ["--caption-prefix"],
        ),
        ("train", ["--caption-prefix STR", "text put in front of every training caption"], ["--init-image"]),
    ],
)
def test_help_with_a_model_lists_the_familys_options(toy_cli, command, shown, hidden):  # type: ignore[no-untyped-def]
    result = toy_cli(command, "--model", "toy", "--help")
    assert result.exit_code == 0, result.output
    section = result.output.split("Options of model family 'toy':")[1]
    assert all(text in section for text in shown), section
    assert not any(text in result.output for text in hidden)
    assert toy_cli(command, "--model=toy", "--help").output == result.output


def test_help_without_a_model_says_how_to_see_family_options(toy_cli):  # type: ignore[no-untyped-def]
    text = toy_cli("generate", "--help").output
    assert "give --model NAME with --help" in " ".join(text.split())
    unknown = " ".join(toy_cli("train", "--model", "nosuch", "--help").output.split())
    assert "no model family 'nosuch' is installed" in unknown


def test_models_shows_the_training_defaults(toy_cli):  # type: ignore[no-untyped-def]
    text = toy_cli("models").output
    section = text.split("training defaults")[1].split("options:")[0]
    rows = dict(line.split(None, 1) for line in section.splitlines()[1:] if line.strip())
    assert rows["lora_rank"] == "4" and rows["learning_rate"] == "0.001"
    assert rows["lora_target_modules"] == "to_q,to_k,to_v,to_out"
    assert rows["max_pixels"] == "4096" and rows["required_columns"] == "image,prompt"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("qwen-image-controlnet", "`pip install diffsynth-controlnet`"),
        ("wan-vace", "`pip install diffsynth-vace`"),
        ("wan-vace-14b", "`pip install diffsynth-vace`"),
        ("qwen-image", "`pip install diffsynth-qwen-image`"),
    ],
)
def test_a_missing_first_party_family_names_its_real_distribution(name: str, hint: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        FamilyRegistry().get(name)
    assert hint in str(caught.value)


def test_an_unknown_family_gets_no_package_guess_but_a_close_name() -> None:
    with pytest.raises(UnknownModelError) as caught:
        FamilyRegistry().get("my-model")
    assert "pip install" not in str(caught.value)
    with pytest.raises(UnknownModelError, match="Did you mean 'wan-vace'?"):
        FamilyRegistry().get("wan-vac")


def test_the_first_party_table_is_true() -> None:
    """Every distribution in the table is one under plugins/, and every installed first-party
    distribution's families are in the table under that distribution."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    ours = {
        tomllib.loads(p.read_text())["project"]["name"] for p in ROOT.glob("plugins/*/pyproject.toml")
    }
    assert set(FIRST_PARTY_FAMILIES.values()) <= ours
    installed = [f for f in build_plugin_manager().families if f.distribution in ours]
    reset_plugin_manager(None)
    if not installed:
        pytest.skip("no first-party plugin is installed in this environment")
    assert {f.name: f.distribution for f in installed}.items() <= FIRST_PARTY_FAMILIES.items()


def test_a_misspelt_load_plugins_name_is_a_warning_with_the_right_name(
    make_dist, monkeypatch, installed
):  # type: ignore[no-untyped-def]
    make_dist("diffsynth-toy-a", {"toy-a": family_plugin("toy-a")})
    monkeypatch.setenv("DIFFSYNTH_LOAD_PLUGINS", "toy-a,toy-aa")
    manager = installed(build_plugin_manager())
    result = CliRunner().invoke(build_cli(manager), ["models"])
    assert result.exit_code == 0 and "toy-a" in result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "DIFFSYNTH_LOAD_PLUGINS names 'toy-aa'" in warnings[0]
    assert "did you mean 'toy-a'?" in warnings[0]
    other = CliRunner().invoke(build_cli(manager), ["generate", "--help"])
    assert "DIFFSYNTH_LOAD_PLUGINS names 'toy-aa'" in other.stderr  # every command says it
