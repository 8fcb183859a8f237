"""The key of one unit call: a hash of the unit's name and the values of its declared inputs.

Two calls with equal keys get equal outputs from a ``cacheable`` unit (its promise). The key
covers exactly what ``run_unit`` passes to ``process``: the shared inputs, and per CFG branch
the branch inputs under the names ``process`` receives. Values hashed: None, numbers, strings,
paths, tensors (dtype, shape, bytes), numpy arrays, PIL images (mode, size, pixels) and
lists / tuples / dicts of those; anything else makes the call uncacheable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

Inputs = dict[str, Any]


class Uncacheable(Exception):
    """An input we cannot hash reliably: run the unit normally."""


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(repr(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif value is None or isinstance(value, (str, int, float, bool, Path)):
        h.update(repr(value).encode())
    elif isinstance(value, torch.Tensor):
        array = value.detach().float() if value.dtype == torch.bfloat16 else value.detach()
        h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        h.update(array.cpu().contiguous().numpy().tobytes())
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
    elif hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):  # PIL
        h.update(f"img{value.mode}{value.size}".encode() + value.tobytes())
    else:
        raise Uncacheable(type(value).__name__)


def call_key(unit: Any, shared: Inputs, posi: Inputs, nega: Inputs) -> str | None:
    """The key of running ``unit`` on these input dicts, or None if an input can't be hashed."""
    h = hashlib.blake2b(unit.name.encode(), digest_size=20)
    try:
        _feed(h, {n: shared.get(n) for n in unit.input_params})
        if unit.separate_cfg:
            _feed(h, {k: posi.get(v) for k, v in unit.input_params_posi.items()})
            if shared.get("cfg_scale", 1) != 1:
                _feed(h, {k: nega.get(v) for k, v in unit.input_params_nega.items()})
    except Uncacheable:
        return None
    return h.hexdigest()


def delta(before: Inputs, after: Inputs) -> Inputs:
    """What a unit added to or replaced in one input dict."""
    return {k: v for k, v in after.items() if k not in before or before[k] is not v}


def copied(values: Inputs, device: Any) -> Inputs:
    """Tensors detached and copied to ``device``: code downstream may change a tensor in
    place, which must reach neither the cache nor the next sample."""
    return {k: _copy(v, device) for k, v in values.items()}


def _copy(value: Any, device: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device, copy=True)
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v, device) for v in value)
    return value
