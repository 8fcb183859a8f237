"""Training from a cache: cached units answered from the shards, dropped models kept away.

:func:`open_cache` checks a cache against the run before any model is loaded (family,
fingerprint, rows) and says which components not to load; :meth:`TrainingCache.attach`
checks the plan on the loaded pipeline, then wraps ``pipe.unit_runner`` so that a cached unit
is answered from the cache (a miss while training is an error: the sample's inputs are not
what was cached), and sets ``pipe.sampling_models``, which sample images enter to load the
dropped models for their duration only.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .fingerprint import (
    differences,
    named,
    row_differences,
    row_fingerprints,
    settings_fingerprint,
    unit_fingerprint,
)
from .folder import CacheFolder, ShardStore
from .keys import call_key
from .plan import plan_for

Inputs = dict[str, Any]


class CacheReplay:
    """``pipe.unit_runner`` with the cached units answered from a store."""

    def __init__(self, inner: Any, store: Any, cached: set[str], source: str) -> None:
        self.inner, self.store, self.cached, self.source = inner, store, cached, source
        self.hits = 0

    def __call__(
        self, unit: Any, pipe: Any, shared: Inputs, posi: Inputs, nega: Inputs
    ) -> tuple[Inputs, Inputs, Inputs]:
        if unit.name in self.cached:
            key = call_key(unit, shared, posi, nega)
            entry = self.store.get(key, pipe.device) if key is not None else None
            if entry is not None:
                self.hits += 1
                for target, part in zip((shared, posi, nega), entry, strict=True):
                    target.update(part)
                return shared, posi, nega
            if pipe.scheduler.training:  # (sample images run the unit on the loaded models)
                raise ConfigError(
                    f"--cache {self.source}: the inputs of {unit.name} for this sample are not in "
                    "the cache: the data changes from one epoch to the next (random augmentation?) "
                    "or differs from what was cached; train without --cache"
                )
        return self.inner(unit, pipe, shared, posi, nega)


class SamplingModels:
    """``pipe.sampling_models(pipe)``: a context in which the dropped models are loaded."""

    def __init__(self, load: Callable[[], Any], names: tuple[str, ...]) -> None:
        self.load, self.names = load, names

    @contextmanager
    def __call__(self, pipe: Any) -> Iterator[None]:
        loaded = self.load()
        for name in self.names:
            setattr(pipe, name, getattr(loaded, name))
        try:
            yield
        finally:
            for name in self.names:
                setattr(pipe, name, None)
            del loaded
            gc.collect()  # their memory goes back before training continues


@dataclass
class TrainingCache:
    folder: CacheFolder
    index: dict[str, Any]
    rows: int

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(self.index["plan"]["dropped_models"])

    def stale(self, what: str) -> ConfigError:
        return ConfigError(
            f"--cache {self.folder.root} is stale: {what} changed since it was built; rebuild "
            f"it with: {self.index.get('command') or 'diffsynth cache ...'}"
        )

    def without_dropped(self, configs: Mapping[str, Any]) -> dict[str, Any]:
        return {name: config for name, config in configs.items() if name not in self.dropped}

    def attach(self, module: Any, load_dropped: Callable[[], Any]) -> CacheReplay:
        """Check the plan on the loaded pipeline, then answer its cached units from the cache."""
        pipe = module.pipe
        plan = plan_for(pipe)
        now = unit_fingerprint(plan, pipe, module.extra_inputs)
        changed = differences({k: self.index["fingerprint"].get(k) for k in now}, now)
        if changed:
            raise self.stale(named(changed))
        store = ShardStore(self.folder, range(self.rows), self.index.get("settings"))
        replay = CacheReplay(pipe.unit_runner, store, set(plan.cached), str(self.folder.root))
        pipe.unit_runner = replay
        pipe.sampling_models = SamplingModels(load_dropped, self.dropped)
        return replay


def open_cache(
    path: str | Path, run: Any, dataset: Any, configs: Mapping[str, Any], dtype: Any
) -> TrainingCache:
    """The cache at ``path``, checked against the run before any model is loaded."""
    folder = CacheFolder(path)
    index = folder.read_index()
    recorded = index.get("fingerprint", {})
    if recorded.get("family") != run.family.name:
        raise ConfigError(
            f"--cache {path} holds the features of {recorded.get('family')!r}, not "
            f"{run.family.name!r}: give the cache built for this model"
        )
    if run.config.batch_size != 1:
        raise ConfigError(
            "--cache answers one sample at a time: use --batch-size 1 with "
            "--gradient-accumulation-steps N for a larger effective batch"
        )
    cache = TrainingCache(folder, index, len(dataset.rows))
    now = settings_fingerprint(run, configs, dtype)
    changed = differences({k: recorded.get(k) for k in now}, now)
    if changed:
        raise cache.stale(named(changed))
    rows = row_fingerprints(dataset)
    changed_rows, missing = row_differences(index["rows"], rows)
    if changed_rows:
        raise cache.stale(named(changed_rows))
    missing += [f"{i} ({rows[i]['label']})" for i in range(min(len(rows), len(index["rows"])))
                if folder.header(i) is None]  # fmt: skip
    if missing:
        raise ConfigError(
            f"--cache {path} is missing rows {named(missing)}; run its `diffsynth cache` command "
            f"again to add them: {index.get('command') or 'diffsynth cache ...'}"
        )
    return cache
