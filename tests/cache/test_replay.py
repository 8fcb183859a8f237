"""Training from a cache: a cached unit is answered from the store; a miss while training is
refused (the data changed between epochs, e.g. random augmentation); sampling runs the unit."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from diffsynth_core.cache.keys import call_key
from diffsynth_core.cache.replay import CacheReplay
from diffsynth_core.errors import ConfigError
from diffsynth_core.pipeline import PipelineUnit


class Embed(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(input_params=("input_image",), output_params=("z",), cacheable=True)


class Store:
    def __init__(self, entries: dict[str, Any]) -> None:
        self.entries = entries

    def get(self, key: str, device: Any) -> Any:
        return self.entries.get(key)


def test_a_cached_unit_is_answered_and_a_training_miss_is_refused() -> None:
    ran: list[int] = []

    def inner(unit: Any, pipe: Any, shared: Any, posi: Any, nega: Any) -> Any:
        ran.append(1)
        return {**shared, "z": torch.zeros(1)}, posi, nega

    unit, pipe = Embed(), SimpleNamespace(device="cpu", scheduler=SimpleNamespace(training=True))
    seen = {"input_image": torch.ones(2)}
    replay = CacheReplay(inner, Store({call_key(unit, seen, {}, {}): ({"z": torch.full((1,), 7.0)}, {}, {})}), {"Embed"}, "c/")  # fmt: skip
    shared, _, _ = replay(unit, pipe, dict(seen), {}, {})
    assert shared["z"].item() == 7.0 and ran == [] and replay.hits == 1
    flipped = {"input_image": torch.ones(2) * -1}  # e.g. a random flip: not what was cached
    with pytest.raises(ConfigError, match="not in the cache.*random augmentation"):
        replay(unit, pipe, flipped, {}, {})
    pipe.scheduler.training = False  # a sample image: its prompt was never cached
    assert replay(unit, pipe, flipped, {}, {})[0]["z"].item() == 0.0 and ran == [1]
