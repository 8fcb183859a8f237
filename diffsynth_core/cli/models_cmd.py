"""``diffsynth models``: the installed model families, their default files, training defaults
and options."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from ..plugins import get_plugin_manager
from ..registry import ModelFamily
from .common import echo_json, format_table, warn_broken


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def models(as_json: bool) -> None:
    """List model families: plugin, version, description, default files, training defaults,
    family options."""
    manager = get_plugin_manager()
    families = list(manager.families)
    if as_json:
        echo_json([family.as_dict() for family in families])
    else:
        rows = [[f.name, f.plugin, f.distribution, f.version, f.description] for f in families]
        click.echo(
            format_table(["FAMILY", "PLUGIN", "DISTRIBUTION", "VERSION", "DESCRIPTION"], rows)
        )
        for family in families:
            click.echo("\n" + _details(family))
    warn_broken(manager)


def _details(family: ModelFamily) -> str:
    lines = [f"{family.name}:"]
    if family.base_family:
        lines.append(f"  extends: {family.base_family}")
    lines.append(f"  tiny preset: {'yes' if family.build_tiny else 'no'}")
    lines.append("  default model files:" if family.model_files else "  default model files: none")
    for component, files in family.model_files.items():
        lines.append(f"    {component:<14} {files.model_id}  {files.origin_file_pattern}")
    lines.append("  training defaults (flags and config keys override them):")
    for name, value in asdict(family.defaults).items():
        lines.append(f"    {name:<24} {_value(value)}")
    lines.append("  options:" if family.options else "  options: none")
    for option in family.options:
        default = "" if option.default in (None, "") else f" (default {option.default})"
        where = "train, generate" if option.command == "both" else option.command
        lines.append(
            f"    {option.flag} <{option.kind}> [{where}]{default}  {option.help}".rstrip()
        )
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value in (None, "") else str(value)
