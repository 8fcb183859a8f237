"""diffsynth-toy-echo: an example third-party diffsynth plugin.

The plugin manager imports this module when any ``diffsynth`` command starts, ``--help``
included, so it imports nothing heavy: torch and model code belong inside functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from diffsynth_core import (
    ComponentFiles,
    DiffSynthError,
    FamilyOption,
    ModelFamily,
    TrainingDefaults,
    hookimpl,
)

FAMILY = ModelFamily(
    name="toy-echo",
    description="Example family from a third-party plugin (no weights; for docs and tests).",
    model_files={"dit": ComponentFiles("example/toy-echo", "dit/*.safetensors")},
    defaults=TrainingDefaults(lora_rank=4, lora_target_modules="to_q,to_k,to_v"),
    options=(FamilyOption("echo_prefix", "str", default="", help="Text put before every echo."),),
)


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    register(FAMILY)


@hookimpl
def diffsynth_checkpoint_name(kind: str, step: int, family: Any) -> str | None:
    # Only name our own family's files; None hands every other family to the next plugin.
    if family is None or family.name != FAMILY.name:
        return None
    return f"toy-echo-{kind}-{step:06d}.safetensors"


@click.command("toy-echo")
@click.argument("text")
@click.option("--prefix", default="", help="Text put before TEXT.")
def toy_echo(text: str, prefix: str) -> None:
    """Print TEXT back (an example plugin command)."""
    if not text.strip():
        # A DiffSynthError becomes one `error: ...` line and exit status 1.
        raise DiffSynthError("toy-echo needs some text to echo")
    click.echo(prefix + text)


@hookimpl
def diffsynth_register_commands(cli: click.Group) -> None:
    cli.add_command(toy_echo)
