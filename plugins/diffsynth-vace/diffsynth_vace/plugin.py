"""The diffsynth plugin of Wan2.1 VACE: registers the ``wan-vace`` and ``wan-vace-14b``
families (declared in :mod:`diffsynth_vace.family`) and the ``wan`` LoRA format.

Entry point ``wan-vace = "diffsynth_vace.plugin"`` in the group ``diffsynth``. Importing this
module must stay cheap (``diffsynth --help`` imports every plugin): no torch, no diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffsynth_core import ModelFamily, hookimpl

from .family import FAMILIES


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    for family in FAMILIES:
        register(family)


@hookimpl
def diffsynth_register_lora_formats(register: Callable[[Any], None]) -> None:
    """``--lora-format wan`` (the ``comfyui`` file of a Wan-layout family, by its own name)."""
    from .formats import WAN_FORMAT

    register(WAN_FORMAT)
