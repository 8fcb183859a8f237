"""``diffsynth plugins``: every plugin, its distribution, its hooks and whether it loaded."""

from __future__ import annotations

import click

from ..plugins import PluginInfo, get_plugin_manager
from .common import echo_json, format_table


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List installed plugins: name, distribution, version, hooks, status (ok / broken)."""
    infos = list(get_plugin_manager().plugins.values())
    if as_json:
        echo_json([info.as_dict() for info in infos])
        return
    click.echo(format_table(["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS"], _rows(infos)))
    for info in infos:
        if info.error:
            click.echo(f"\n{info.name} is broken: {info.error}")


def _rows(infos: list[PluginInfo]) -> list[list[str]]:
    return [
        [
            info.name,
            info.distribution or "-",
            info.version or "-",
            info.status,
            ", ".join(h.removeprefix("diffsynth_") for h in info.hooks) or "-",
        ]
        for info in infos
    ]
