"""The ``diffsynth`` group through click's CliRunner: listings, plugin commands, errors."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from plugin_fakes import load

from diffsynth_core import ComponentFiles, FamilyOption, ModelFamily, __version__, hookimpl
from diffsynth_core.cli.main import build_cli
from diffsynth_core.errors import DiffSynthError
from diffsynth_core.plugins import PluginManager, get_plugin_manager


def run(manager: PluginManager, *args: str, **env: str) -> click.testing.Result:
    return CliRunner().invoke(build_cli(manager), list(args), env=env or None)


class Toy:
    """A plugin with a family, a command, and a command that fails the way a user can fix."""

    @hookimpl
    def diffsynth_register_models(self, register):
        register(
            ModelFamily(
                name="toy",
                description="a toy family",
                model_files={"dit": ComponentFiles("org/toy", "dit/*.safetensors")},
                options=(FamilyOption("strength", "float", default=0.5, help="how strong"),),
            )
        )

    @hookimpl
    def diffsynth_register_commands(self, cli):
        @cli.command("toy-fail")
        def toy_fail():
            """Fail with a DiffSynthError, as a command does on bad input."""
            raise DiffSynthError("the toy broke;\nfix the toy")

        @cli.command("toy-family")
        @click.argument("name")
        def toy_family(name):
            """Look a family up, as `train --model NAME` does."""
            click.echo(get_plugin_manager().get_family(name).plugin)


@pytest.fixture
def manager(installed) -> PluginManager:
    return installed(PluginManager.with_plugins(Toy()))


def test_version(manager):
    result = run(manager, "--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_core_and_plugin_commands(manager):
    result = run(manager, "--help")
    assert result.exit_code == 0
    for name in ("train", "generate", "plugins", "models", "toy-fail"):
        assert f"  {name}" in result.output


def test_plugins_table_and_json(manager):
    table = run(manager, "plugins").output
    assert "Toy" in table and "register_commands, register_models" in table
    rows = json.loads(run(manager, "plugins", "--json").output)
    toy = next(row for row in rows if row["name"] == "Toy")
    assert toy["status"] == "ok" and toy["error"] is None
    assert toy["families"] == ["toy"] and toy["commands"] == ["toy-fail", "toy-family"]
    assert "diffsynth_register_models" in toy["hooks"]


def test_models_text_and_json(manager):
    text = run(manager, "models").output
    assert "toy" in text and "org/toy  dit/*.safetensors" in text and "--strength <float>" in text
    (family,) = json.loads(run(manager, "models", "--json").output)
    assert family["plugin"] == "Toy" and family["model_files"]["dit"]["model_id"] == "org/toy"
    assert family["options"][0] == {
        "name": "strength",
        "kind": "float",
        "default": 0.5,
        "help": "how strong",
        "command": "both",
    }


def test_a_diffsynth_error_is_one_line_and_exit_1(manager):
    result = run(manager, "toy-fail")
    assert result.exit_code == 1
    assert result.stderr == "error: the toy broke; fix the toy\n"
    assert "Traceback" not in result.output


def test_debug_lets_the_error_propagate(manager):
    result = run(manager, "toy-fail", DIFFSYNTH_DEBUG="1")
    assert isinstance(result.exception, DiffSynthError)


def test_usage_errors_keep_clicks_exit_2(manager):
    result = run(manager, "no-such-command")
    assert result.exit_code == 2 and "No such command" in result.stderr


def test_a_broken_plugins_family_fails_the_command_with_its_error(make_dist, installed):
    make_dist("diffsynth-toy-video", {"toy-video": "raise ImportError('needs av')"})
    manager = load("toy-video")
    manager.register_object(Toy(), "Toy")
    installed(manager)
    result = run(manager, "toy-family", "toy-video")
    assert result.exit_code == 1
    assert "plugin 'toy-video'" in result.stderr and "ImportError: needs av" in result.stderr
    assert run(manager, "toy-family", "toy").output == "Toy\n"


class RaisingCommands:
    @hookimpl
    def diffsynth_register_commands(self, cli):
        cli.add_command(click.Command("half-added"))
        raise RuntimeError("click option typo")


class CollidingCommands:
    @hookimpl
    def diffsynth_register_commands(self, cli):
        cli.add_command(click.Command("models", callback=lambda: click.echo("hijacked")))


@pytest.mark.parametrize(
    ("plugin", "error"),
    [
        (RaisingCommands(), "RuntimeError: click option typo"),
        (CollidingCommands(), "models collide"),
    ],
)
def test_a_plugin_whose_commands_fail_is_broken_and_the_cli_works(installed, plugin, error):
    manager = installed(PluginManager.with_plugins(plugin, Toy()))
    cli = build_cli(manager)
    name = type(plugin).__name__
    assert error in manager.plugins[name].error
    assert "half-added" not in cli.commands
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0 and "hijacked" not in result.output
    assert f"warning: plugin '{name}' is broken" in result.stderr
    assert "toy" in result.output and "toy-fail" in cli.commands


def test_real_entry_point_of_the_example_plugin(installed):
    """The example third-party distribution, installed for real (tox; README for a venv)."""
    manager = installed(load("toy-echo"))
    info = manager.plugins["toy-echo"]
    assert (info.distribution, info.status) == ("diffsynth-toy-echo", "ok"), info.error
    (family,) = json.loads(run(manager, "models", "--json").output)
    assert family["name"] == "toy-echo" and family["distribution"] == "diffsynth-toy-echo"
    assert run(manager, "toy-echo", "hi", "--prefix", "> ").output == "> hi\n"
