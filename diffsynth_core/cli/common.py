"""Helpers shared by the CLI's commands: tables for humans, JSON for scripts.

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
    """A :class:`DiffSynthError` as click shows it: one ``error: ...`` line, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def user_error(exc: DiffSynthError) -> UserError:
    """The click error for ``exc``, its message folded onto one line."""
    return UserError(" ".join(str(exc).split()))


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


def warn_broken(broken: Sequence[Any]) -> None:
    """One stderr line per broken plugin, so a listing never hides that something is missing."""
    for info in broken:
        click.echo(f"warning: plugin {info.name!r} is broken: {info.error}", err=True)
