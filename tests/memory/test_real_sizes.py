"""Every family's declared real size builds the released model: its parameter count and
its block count are the published ones (built on the meta device: no memory)."""

from __future__ import annotations

import pytest
import torch

from diffsynth_core.memory.report import family_spec
from diffsynth_core.plugins import get_plugin_manager

# published parameter counts of the trained models (the DiT; VACE's with its VACE blocks)
PUBLISHED = {"qwen-image": 20.4e9, "wan-vace-14b": 17.3e9, "wan-vace": 2.15e9, "flux-dev": 11.9e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_size_is_the_released_model(name: str) -> None:
    family = get_plugin_manager().get_family(name)
    spec = family_spec(family)
    with torch.device("meta"):
        model = spec.build(spec.units)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - PUBLISHED[name]) <= 0.01 * PUBLISHED[name], params
    assert abs(params - spec.params) <= 0.001 * spec.params, params
    blocks = sum(len(model.get_submodule(n)) for n in family.blocks[spec.model])
    assert blocks == spec.num_blocks
