"""The diffsynth plugin of FLUX.1 (entry point ``flux`` in the group ``diffsynth``).

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers: the families
name their loader and LoRA layout (ComfyUI's fused-qkv Flux names, :mod:`.comfyui`) as
``"module:attribute"``, imported by the core on first use (see :mod:`.family`).
"""

from __future__ import annotations

from collections.abc import Callable

from ._core import ModelFamily, hookimpl
from .family import families


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    for family in families():
        register(family)
