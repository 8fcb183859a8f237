"""Built-in plugin ``builtin-formats``: registers the built-in LoRA formats (``diffusers``,
``comfyui``, ``peft``, ``kohya`` reading; implemented in :mod:`diffsynth_core.lora.builtin_formats`)
through ``diffsynth_register_lora_formats``, the same path a third-party format takes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..lora.builtin_formats import FORMATS
from ..lora.formats import LoraFormat
from ..plugins import hookimpl


@hookimpl
def diffsynth_register_lora_formats(register: Callable[[LoraFormat], None]) -> None:
    for lora_format in FORMATS:
        register(lora_format)
