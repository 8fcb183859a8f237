"""Feature caching (``--cache-features``): run the frozen units once per sample, then reuse.

A unit marked ``cacheable`` (see :class:`~diffsynth_core.pipeline.PipelineUnit`) promises
that its outputs depend only on its declared inputs. :class:`FeatureCache` is a plugin on the
``diffsynth_run_unit`` hook: a wrapper remembers what each cacheable unit added to the three
input dicts, keyed by a hash of the unit's name and declared inputs (prompt text, image
pixels ...), and a ``tryfirst`` implementation answers a repeated call from memory without
running the unit (so the text encoder and VAE stop running after the first epoch). It works
for any family whose units are flagged, and is exact: cached values are copies of computed
ones. Units whose models have trainable weights are never cached. Cached tensors live in CPU
memory; random data augmentation makes every sample new, and then the cache only costs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..plugins import hookimpl

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


def _copy(values: Inputs, device: Any) -> Inputs:
    # always a copy: code downstream may change a tensor in place, which must not reach the cache
    return {
        k: v.detach().to(device, copy=True) if isinstance(v, torch.Tensor) else v
        for k, v in values.items()
    }


def _delta(before: Inputs, after: Inputs) -> Inputs:
    return {k: v for k, v in after.items() if k not in before or before[k] is not v}


class FeatureCache:
    """The ``--cache-features`` plugin; ``install`` it for a run, ``uninstall`` afterwards."""

    __name__ = "feature-cache"

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Inputs, Inputs, Inputs]] = {}
        self.hits = 0
        self._key_now: str | None = None
        self._trainable: dict[int, bool] = {}

    @contextmanager
    def installed(self, manager: Any) -> Iterator[FeatureCache]:
        """Registered with ``manager`` (the plugin manager) inside the block only."""
        manager.pm.register(self, name=self.__name__)
        try:
            yield self
        finally:
            manager.pm.unregister(self)

    def summary(self) -> str:
        return f"feature cache: {len(self.entries)} unit result(s) stored, {self.hits} reused"

    def key(self, unit: Any, pipe: Any, shared: Inputs, posi: Inputs, nega: Inputs) -> str | None:
        """A hash of the unit and its declared inputs, or None when it must not be cached."""
        if not getattr(unit, "cacheable", False) or self._uses_trainable(unit, pipe):
            return None
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

    def _uses_trainable(self, unit: Any, pipe: Any) -> bool:
        if id(unit) not in self._trainable:
            models = [getattr(pipe, n, None) for n in unit.onload_model_names]
            self._trainable[id(unit)] = any(
                p.requires_grad
                for m in models
                if isinstance(m, torch.nn.Module)
                for p in m.parameters()
            )
        return self._trainable[id(unit)]

    @hookimpl(specname="diffsynth_run_unit", wrapper=True)
    def remember(
        self, unit: Any, pipe: Any, inputs_shared: Inputs, inputs_posi: Inputs, inputs_nega: Inputs
    ) -> Any:
        key = self._key_now = self.key(unit, pipe, inputs_shared, inputs_posi, inputs_nega)
        before = (dict(inputs_shared), dict(inputs_posi), dict(inputs_nega))
        result = yield
        if key is not None and key not in self.entries:
            self.entries[key] = tuple(
                _copy(_delta(b, a), "cpu") for b, a in zip(before, result, strict=True)
            )  # type: ignore[assignment]
        return result

    @hookimpl(specname="diffsynth_run_unit", tryfirst=True)
    def recall(
        self, unit: Any, pipe: Any, inputs_shared: Inputs, inputs_posi: Inputs, inputs_nega: Inputs
    ) -> Any:
        entry = self.entries.get(self._key_now) if self._key_now is not None else None
        if entry is None:
            return None
        self.hits += 1
        for target, cached in zip((inputs_shared, inputs_posi, inputs_nega), entry, strict=True):
            target.update(_copy(cached, pipe.device))
        return inputs_shared, inputs_posi, inputs_nega
