"""``--gpu-memory 24GiB``: a memory budget as text -> bytes (no torch imported)."""

from __future__ import annotations

import math
import re

from ..errors import ConfigError

UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)\s*$")


def parse_budget(text: str) -> int:
    """Bytes of a budget such as ``24GiB``, ``16 GB``, ``80000MiB`` (GB = 10^9, GiB = 2^30)."""
    match = _BUDGET.match(text or "")
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS:
        raise ConfigError(
            f"--gpu-memory {text!r}: give a size with a unit, such as 24GiB, 16GB or 80000MiB"
        )
    value = float(match.group(1)) * UNITS[unit]
    if not math.isfinite(value) or value < 2**20:
        raise ConfigError(f"--gpu-memory {text!r}: a GPU budget of at least 1MiB, such as 24GiB")
    return int(value)


def gib(size: float) -> str:
    """``25769803776`` -> ``24.0 GiB``."""
    return f"{size / 2**30:.1f} GiB"
