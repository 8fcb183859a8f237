"""``diffsynth plugins``: every plugin, its distribution, its hooks and whether it loaded,
then the LoRA formats (``--lora-format``) the plugins registered."""

from __future__ import annotations

import click

from ..lora.formats import LoraFormat
from ..plugins import PluginInfo, get_plugin_manager
from .common import echo_json, format_table


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--formats", "only_formats", is_flag=True, help="List only the LoRA formats (--lora-format)."
)
def plugins(as_json: bool, only_formats: bool) -> None:
    """List installed plugins (name, distribution, version, hooks, status) and LoRA formats."""
    manager = get_plugin_manager()
    infos = list(manager.plugins.values())
    formats = list(manager.lora_formats.values())
    if as_json:
        if only_formats:
            echo_json([f.as_dict() for f in formats])
        else:
            echo_json([info.as_dict() for info in infos])
        return
    if not only_formats:
        click.echo(format_table(["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS"], _rows(infos)))
        click.echo("\nLoRA formats (--lora-format):")
    click.echo(format_table(["FORMAT", "PLUGIN", "READ/WRITE", "DESCRIPTION"], _format_rows(formats)))
    for info in infos:
        if info.error and not only_formats:
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


def _format_rows(formats: list[LoraFormat]) -> list[list[str]]:
    def modes(f: LoraFormat) -> str:
        return "/".join(m for m, on in (("read", f.import_), ("write", f.export)) if on) or "-"

    return [[f.name, f.plugin, modes(f), f.description] for f in formats]
