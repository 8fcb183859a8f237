"""A unit call's outputs as safetensors tensors plus a JSON structure (never pickle).

An entry is the three dicts a unit added to (shared, positive, negative). Values may be
tensors, None, numbers, strings, booleans and lists / tuples of these (a list of edit
latents); each tensor is stored under ``<prefix>/<dict>/<name>[/<i>]`` and the structure
records where. Anything else cannot go into a cache and is an error naming the unit.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import PluginError
from ..training.speed import to_device

BRANCHES = ("shared", "posi", "nega")
Entry = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def _pack(value: Any, path: str, tensors: dict[str, torch.Tensor], unit: str) -> Any:
    if isinstance(value, torch.Tensor):
        # own contiguous storage: safetensors refuses views and shared memory
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"t": path}
    if isinstance(value, (list, tuple)):
        items = [_pack(v, f"{path}/{i}", tensors, unit) for i, v in enumerate(value)]
        return {"list": items, "tuple": isinstance(value, tuple)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    raise PluginError(
        f"unit {unit} returned {path.split('/')[-1]!r} of type {type(value).__name__}, which a "
        "cache cannot store (tensors, numbers, strings, None and lists of them): do not flag "
        "it cacheable"
    )


def pack(entry: Entry, prefix: str, tensors: dict[str, torch.Tensor], unit: str) -> dict[str, Any]:
    """The structure of ``entry``; its tensors are added to ``tensors``."""
    return {
        branch: {
            name: _pack(v, f"{prefix}/{branch}/{name}", tensors, unit) for name, v in part.items()
        }
        for branch, part in zip(BRANCHES, entry, strict=True)
    }


def _unpack(spec: dict[str, Any], read: Any, device: Any) -> Any:
    if "t" in spec:
        return to_device(read(spec["t"]), device)  # pinned, async on CUDA
    if "list" in spec:
        items = [_unpack(s, read, device) for s in spec["list"]]
        return tuple(items) if spec["tuple"] else items
    return spec["v"]


def unpack(structure: dict[str, Any], read: Any, device: Any) -> Entry:
    """The entry back; ``read(name)`` gives a stored tensor."""
    parts = [
        {name: _unpack(spec, read, device) for name, spec in structure[b].items()} for b in BRANCHES
    ]
    return parts[0], parts[1], parts[2]
