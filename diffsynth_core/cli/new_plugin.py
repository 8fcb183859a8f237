"""``diffsynth new-plugin NAME``: scaffold a plugin distribution for a new model family.

    diffsynth new-plugin my-model          # -> ./my-model/ (diffsynth-my-model)
    pip install -e my-model && pytest my-model

The layout and each file's role: docs/plugin-guide.md. Torch-free (templates only).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="folder to create (default: ./NAME); must be missing or empty",
)
def new_plugin(name: str, output: Path | None) -> None:
    """Scaffold a plugin distribution for the model family NAME (tests included)."""
    from .. import __version__
    from ..scaffold import PluginNames, scaffold

    names = PluginNames.from_name(name)
    folder = output or Path(name)
    files = scaffold(names, folder, __version__)
    click.echo(f"wrote {names.distribution} ({len(files)} files) to {folder}")
    click.echo(f"family {names.family!r}, package {names.package}, plugin {names.entry_point!r}")
    click.echo(f"next: pip install -e {folder} && pytest {folder}")
