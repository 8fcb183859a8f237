"""The ``diffsynth`` command: a click group of the core's commands and every plugin's.

Startup rule: ``diffsynth --help`` imports this module, every command module and every
plugin's entry point, and must not import torch (nor diffusers, transformers, peft,
accelerate, pandas). Commands import those inside their bodies.

Errors: a :class:`~diffsynth_core.errors.DiffSynthError` raised anywhere below the group, and
an exception of a library we call that the user caused (a full disk, a truncated safetensors
file, an unreadable image, a peft target that matches nothing; ``cli/translate.py`` decides),
is shown as one ``error: ...`` line on stderr with exit status 1. Any other exception is a bug
and keeps its traceback. Under ``DIFFSYNTH_DEBUG=1`` everything propagates with its traceback.
Click's own usage errors keep click's behaviour (exit 2).
Ctrl-C that reaches the group (while loading, say) is one ``interrupted: ...`` line, exit 130.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..plugins import PluginManager, get_plugin_manager
from .common import UserError, debug_enabled, warn_plugin_selection
from .translate import user_message

# click's own control flow (usage errors, --help, ctx.exit) passes through untouched
_CLICK_FLOW = (click.ClickException, click.exceptions.Exit, click.Abort)


class DiffSynthGroup(click.Group):
    """The top-level group; turns user-caused errors from any subcommand into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        warn_plugin_selection(getattr(self, "manager", None))
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = None if isinstance(exc, _CLICK_FLOW) or debug_enabled() else user_message(exc)
            if message is None:
                raise
            raise UserError(message) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C outside the training loop's own handler
            if debug_enabled():
                raise
            click.echo(f"interrupted: {str(exc) or 'Ctrl-C before the command finished'}", err=True)
            raise click.exceptions.Exit(130) from exc  # 128 + SIGINT, as a shell reports it


def build_cli(manager: PluginManager | None = None) -> click.Group:
    """The ``diffsynth`` group: core commands, then each plugin's (isolated) commands."""
    from .cache_cmd import cache
    from .generate import generate
    from .models_cmd import models
    from .new_plugin import new_plugin
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

    for command in (train, cache, generate, plugins, models, new_plugin):
        cli.add_command(command)
    from .convert_config import convert_config  # (issue 15 item 10)

    cli.add_command(convert_config)
    cli.manager = manager or get_plugin_manager()  # type: ignore[attr-defined]
    cli.manager.register_commands(cli)  # type: ignore[attr-defined]
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``diffsynth = diffsynth_core.cli.main:main``)."""
    build_cli().main(args=list(argv) if argv is not None else None, prog_name="diffsynth")


if __name__ == "__main__":
    main()
