"""The diffsynth plugin of Qwen-Image (entry point ``qwen-image`` in the group ``diffsynth``):
registers the family declared in :mod:`diffsynth_qwen_image.family` and the edit families of
:mod:`diffsynth_qwen_image.edit_family`.

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers.
"""

from __future__ import annotations

from collections.abc import Callable

from diffsynth_core import ModelFamily, hookimpl

from .edit_family import qwen_image_edit_family, qwen_image_edit_plus_family
from .family import qwen_image_family


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    register(qwen_image_family())
    register(qwen_image_edit_family())
    register(qwen_image_edit_plus_family())
