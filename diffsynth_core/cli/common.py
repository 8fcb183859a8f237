"""Helpers shared by the CLI's commands: tables for humans, JSON for scripts, the one-line
user error, and the ``--help`` of commands that take a family's own options.

Light on purpose (click and the standard library only): every command module imports it, and
``diffsynth --help`` imports every command module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import click

from ..errors import DiffSynthError

DEBUG_ENV = "DIFFSYNTH_DEBUG"


def debug_enabled() -> bool:
    """``DIFFSYNTH_DEBUG=1`` (any value but empty or ``0``): let errors show their traceback."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class UserError(click.ClickException):
    """An error the user can fix, as click shows it: one ``error: ...`` line, exit status 1.

    Made by the group from a :class:`DiffSynthError` or a recognised library error
    (``cli/translate.py``)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def warn_plugin_selection(manager: Any) -> None:
    """One stderr line per ``DIFFSYNTH_LOAD_PLUGINS`` name that matches no installed plugin:
    a typo there would otherwise leave a plugin out without a word."""
    for name in getattr(manager, "unknown_selected", ()):
        info = manager.plugins[name]
        click.echo(f"warning: DIFFSYNTH_LOAD_PLUGINS names {name!r}: {info.error}", err=True)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (``--json`` output of every command)."""
    click.echo(json.dumps(data, indent=2, default=str))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: columns padded to their widest cell, a dashed rule under the header."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def warn_broken(manager: Any) -> None:
    """One stderr line per broken plugin, so a listing never hides that something is missing
    (a misspelt DIFFSYNTH_LOAD_PLUGINS name is warned about by the group, for every command)."""
    for info in manager.broken():
        if info.name in manager.unknown_selected:
            continue
        click.echo(f"warning: plugin {info.name!r} is broken: {info.error}", err=True)


class FamilyCommand(click.Command):
    """A command that takes a family's own options: ``--model NAME --help`` lists them too.

    click handles ``--help`` while it parses, before any value reaches the command, so the
    ``--model`` value is picked from the raw arguments first.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["diffsynth.model"] = _model_argument(args)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        name = ctx.meta.get("diffsynth.model")
        title, rows = family_option_help(self.name or "", name)
        with formatter.section(title):
            if rows:
                formatter.write_dl(rows)
            else:
                formatter.write_text(_no_rows(name))


def _model_argument(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.partition("=")[2]
    return None


def family_option_help(command: str, name: str | None) -> tuple[str, list[tuple[str, str]]]:
    """(section title, (flag, help) rows) of family ``name``'s options for ``command``."""
    if not name:
        return "Family options", []
    from ..plugins import get_plugin_manager

    try:
        family = get_plugin_manager().get_family(name)
    except DiffSynthError as exc:
        return f"Options of model family {name!r}", [("(unavailable)", " ".join(str(exc).split()))]
    rows = []
    for option in family.options_for(command):
        flag = f"{option.flag} / --no-{option.flag[2:]}" if option.kind == "bool" else option.flag
        default = "" if option.default in (None, "") else f"  [default: {option.default}]"
        rows.append((f"{flag} {option.kind.upper()}", f"{option.help}{default}".strip()))
    return f"Options of model family {name!r}", rows


def _no_rows(name: str | None) -> str:
    if name:
        return f"Model family {name!r} has no options of its own for this command."
    return (
        "A model family can add options of its own: give --model NAME with --help to list "
        "them (`diffsynth models` lists every family's)."
    )
