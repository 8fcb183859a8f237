"""``diffsynth cache``: encode a dataset once with the frozen units, for ``train --cache``.

The model, data and resolution flags are the train settings of the same names (declared once
in training/settings.py), so a cache is built with exactly the values a training run
resolves (family defaults, family options as extra flags). Only click is imported here.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

import click

from ..training.settings import BY_NAME, click_option
from .common import FamilyCommand

# the train settings that decide what the cached units compute (or which units are cached)
SHARED = (
    "model", "dataset", "metadata", "model_path", "preset", "allow_pickle", "mixed_precision",
    "height", "width", "max_pixels", "num_frames", "data_file_keys", "on_bad_sample",
    "trainable_models", "lora_base_model", "base_precision",
)  # fmt: skip


def shared_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(SHARED):
        decls, kwargs = click_option(BY_NAME[name])
        function = click.option(*decls, **kwargs)(function)
    return function


@click.command(
    "cache",
    cls=FamilyCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--output", "cache_dir", required=True, type=click.Path(file_okay=False),
              help="cache folder (resumed if it holds an unfinished cache run)")  # fmt: skip
@click.option("--progress/--no-progress", default=True, help="show a progress bar [on]")
@shared_options
@click.pass_context
def cache(ctx: click.Context, cache_dir: str, progress: bool, **flags: Any) -> None:
    """Run the frozen units (text encoder, VAE ...) once per data row into a cache folder.

    Then `diffsynth train --cache CACHE` trains from it without loading those models.
    Several processes: `accelerate launch $(which diffsynth) cache ...` (each encodes a share).
    `diffsynth train --explain-cache` shows what is cached.
    """
    from ..cache.encode import build_cache
    from .run import build

    given = {name: value for name, value in flags.items() if value is not None}
    run = build.prepare(given, None, list(ctx.args))
    command = _command(given, list(ctx.args), cache_dir)
    report = build_cache(run, cache_dir, command, click.echo, progress)
    if report.main_process:
        click.echo(report.summary())


def _command(given: dict[str, Any], extra: list[str], cache_dir: str) -> str:
    """The command line that rebuilds this cache, for the error that finds it stale."""
    parts = ["diffsynth", "cache"]
    for name, value in given.items():
        flag = BY_NAME[name].flag
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join([*parts, *extra, "--output", cache_dir])
