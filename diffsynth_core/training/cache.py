"""``--cache-features``: the split-training cache (:mod:`diffsynth_core.cache`), kept in memory.

The same keys (:func:`~diffsynth_core.cache.keys.call_key`: a hash of the unit and its declared
inputs) and the same record / replay of a unit's outputs as ``diffsynth cache`` and
``train --cache``; the store is a dict filled on first sight instead of shards on disk, so the
frozen encoders stay loaded and the first epoch still runs them. :class:`FeatureCache` is a
plugin on the ``diffsynth_run_unit`` hook: a wrapper records what each cacheable unit added to
the three input dicts, and a ``tryfirst`` implementation answers a repeated call from memory.
Units whose models have trainable weights are never cached; random data augmentation makes
every sample new, and then the cache only costs. To keep the encoders out of training
altogether, build a disk cache: ``diffsynth cache`` then ``diffsynth train --cache``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..cache.keys import call_key, copied, delta
from ..plugins import hookimpl

Inputs = dict[str, Any]


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
        return call_key(unit, shared, posi, nega)

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
                copied(delta(b, a), "cpu") for b, a in zip(before, result, strict=True)
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
            target.update(copied(cached, pipe.device))
        return inputs_shared, inputs_posi, inputs_nega
