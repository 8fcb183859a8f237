"""``diffsynth train``: train a LoRA (or full weights) of any installed model family.

Only click is imported at module level; torch and the model code load inside the command, so
``diffsynth --help`` stays fast. Every flag defaults to None ("not given"), so that family
defaults and ``--config`` values can fill what the user left out (see cli/run/config.py).
Flags the command does not know are checked against the family's own options. The flags are
the settings declared in training/settings.py, one option each.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import click

from ..training.settings import SETTINGS, click_option
from .common import FamilyCommand


def train_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per setting of training/settings.py, in their order."""
    for setting in reversed(SETTINGS):
        decls, kwargs = click_option(setting)
        function = click.option(*decls, **kwargs)(function)
    return function


@click.command(
    "train",
    cls=FamilyCommand,  # `--model NAME --help` lists the family's options too
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of settings (keys named like the flags); flags override it",
)
@train_options
@click.pass_context
def train(ctx: click.Context, config_file: str | None, **flags: Any) -> None:
    """Train a LoRA (or full weights) of a model family on a dataset.

    Family-specific options (shown by `diffsynth models`) are given as extra flags, e.g.
    `--control-image-key control`. Multi-GPU: `accelerate launch $(which diffsynth) train ...`.
    """
    from .run import build

    given = {name: value for name, value in flags.items() if value is not None}
    run = build.prepare(given, config_file, list(ctx.args))
    if run.config.estimate_memory:  # before anything is loaded or written
        from ..memory.report import estimate_memory

        ctx.exit(estimate_memory(run.config, run.family, click.echo))
    if run.config.check_data:
        ctx.exit(build.check_data(run, click.echo))
    if run.config.explain_cache:
        ctx.exit(build.explain_cache(run, click.echo))
    result = build.train(run, click.echo)
    # the other processes of a data-parallel run trained the same steps: one report is enough
    echo = click.echo if result.main_process else (lambda _line: None)
    for note in result.notes:
        echo(note)
    if result.interrupted:
        echo(
            f"stopped by {result.interrupted} at step {result.steps}; state saved in {result.state}. Continue with --resume latest."
        )
        ctx.exit(_exit_status(result.interrupted))
    if not result.already_finished:
        echo(f"done: {result.steps} steps, checkpoint {result.checkpoint}")


def _exit_status(signal_name: str) -> int:
    """128 + the signal number, as a shell reports a process stopped by that signal."""
    known = signal.Signals.__members__
    return 128 + known[signal_name].value if signal_name in known else 1
