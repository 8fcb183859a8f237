"""The repeated transformer blocks a family declares (``ModelFamily.blocks``).

Block swap, sharded training's wrapping and regional compilation all work block by block;
they find the blocks here, from the family's one declaration, so no mechanism knows a model
class. A family that names no blocks for a model gets one clear error from the mechanism
that needs them.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError


def block_lists(pipe: Any, model: str) -> list[torch.nn.ModuleList]:
    """The block lists of pipeline model ``model``, in forward order (may be empty)."""
    family = getattr(pipe, "family", None)
    if family is None:  # a pipeline built by hand, not through load_pipeline
        return []
    names = tuple(family.blocks.get(model, ()))
    target = getattr(pipe, model, None)
    lists = []
    for name in names:
        found = getattr(target, name, None)
        if not isinstance(found, torch.nn.ModuleList):
            raise ConfigError(
                f"family {family.name!r} declares blocks {model}.{name}, which is not a "
                f"ModuleList of the loaded {type(target).__name__} (a plugin bug: its "
                "ModelFamily.blocks names the wrong attribute)"
            )
        lists.append(found)
    return lists


def repeated_blocks(pipe: Any, model: str, purpose: str) -> list[torch.nn.Module]:
    """Every declared block of ``model`` in forward order; a ConfigError naming ``purpose``
    (e.g. ``--blocks-to-swap``) when the family declares none for that model."""
    blocks = [block for blocks in block_lists(pipe, model) for block in blocks]
    if not blocks:
        family = getattr(getattr(pipe, "family", None), "name", "this family")
        raise ConfigError(
            f"{purpose} needs the transformer blocks of {model!r}, and family {family!r} "
            "declares none (ModelFamily.blocks); leave the option out for this model"
        )
    return blocks
