"""The diffsynth plugin of Qwen-Image (entry point ``qwen-image`` in the group ``diffsynth``):
registers the family declared in :mod:`diffsynth_qwen_image.family`.

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers.
"""

from __future__ import annotations

from collections.abc import Callable

from diffsynth_core import ModelFamily, hookimpl

from .family import qwen_image_family


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    register(qwen_image_family())
