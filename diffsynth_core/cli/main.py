"""The ``diffsynth`` command: a click group of the core's commands and every plugin's.

Startup rule: ``diffsynth --help`` imports this module, every command module and every
plugin's entry point, and must not import torch (nor diffusers, transformers, peft,
accelerate, pandas). Commands import those inside their bodies.

Errors: a :class:`~diffsynth_core.errors.DiffSynthError` raised anywhere below the group is
shown as one ``error: ...`` line on stderr with exit status 1; under ``DIFFSYNTH_DEBUG=1`` it
propagates with its traceback. Click's own usage errors keep click's behaviour (exit 2).
Ctrl-C that reaches the group (while loading, say) is one ``interrupted: ...`` line, exit 130.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..errors import DiffSynthError
from ..plugins import PluginManager, get_plugin_manager
from .common import debug_enabled, user_error


class DiffSynthGroup(click.Group):
    """The top-level group; turns DiffSynthError from any subcommand into a one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DiffSynthError as exc:
            if debug_enabled():
                raise
            raise user_error(exc) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C outside the training loop's own handler
            if debug_enabled():
                raise
            click.echo(f"interrupted: {str(exc) or 'Ctrl-C before the command finished'}", err=True)
            raise click.exceptions.Exit(130) from exc  # 128 + SIGINT, as a shell reports it


def build_cli(manager: PluginManager | None = None) -> click.Group:
    """The ``diffsynth`` group: core commands, then each plugin's (isolated) commands."""
    from .generate import generate
    from .models_cmd import models
    from .plugins_cmd import plugins
    from .train import train

    @click.group(
        cls=DiffSynthGroup,
        context_settings={"help_option_names": ["-h", "--help"]},
        epilog="Set DIFFSYNTH_DEBUG=1 to see tracebacks; docs: docs/index.md",
    )
    @click.version_option(__version__, "--version", "-V", prog_name="diffsynth")
    def cli() -> None:
        """Train and run diffusion models; model families come from plugins."""

    for command in (train, generate, plugins, models):
        cli.add_command(command)
    (manager or get_plugin_manager()).register_commands(cli)
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``diffsynth = diffsynth_core.cli.main:main``)."""
    build_cli().main(args=list(argv) if argv is not None else None, prog_name="diffsynth")


if __name__ == "__main__":
    main()
