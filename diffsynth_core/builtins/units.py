"""Built-in plugin: the default unit runner behind ``diffsynth_run_unit``."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl


@hookimpl(trylast=True)
def diffsynth_run_unit(
    unit: Any,
    pipe: Any,
    inputs_shared: dict[str, Any],
    inputs_posi: dict[str, Any],
    inputs_nega: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from ..pipeline import run_unit

    return run_unit(unit, pipe, inputs_shared, inputs_posi, inputs_nega)
