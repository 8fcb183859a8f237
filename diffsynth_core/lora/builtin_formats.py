"""The built-in LoRA formats: ``diffusers``, ``comfyui``, ``peft``, and ``kohya`` reading.

Registered by the built-in plugin :mod:`diffsynth_core.builtins.formats`. Each applies the
family's :class:`~diffsynth_core.lora.formats.LoraLayout`: the diffusers component per pipeline model, and for ComfyUI the model it loads as
``diffusion_model`` with the family's own key names where they differ (Wan, Flux). Full
weights keep bare keys in every format (a component's own state dict, what diffusers'
``from_pretrained`` and ComfyUI's loader read), unless several models were trained: then each
gets its diffusers component prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .formats import (
    LoraFormat,
    component,
    family_layout,
    split_models,
    with_prefix,
)

# kohya / musubi ``lora_unet_``; OneTrainer writes ``lora_unet__``
_KOHYA = re.compile(r"^lora_(?:unet_?|te\d?|transformer)_")


def _merge(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {key: value for part in parts for key, value in part.items()}


def export_diffusers(state_dict: dict[str, Any], family: Any, kind: str) -> dict[str, Any]:
    """Each model's keys under its diffusers component (``transformer.``), what
    ``load_lora_weights`` reads; a LoRA without it loads with no error and no effect."""
    parts = split_models(state_dict, family)
    if kind == "full" and len(parts) <= 1:
        return _merge(parts.values())
    return _merge(with_prefix(component(family, m), keys) for m, keys in parts.items())


def export_comfyui(state_dict: dict[str, Any], family: Any, kind: str) -> dict[str, Any]:
    """The diffusion model's keys in ComfyUI's names under ``diffusion_model.``; any other
    model (a ControlNet) keeps its diffusers component prefix."""
    layout = family_layout(family)
    parts = split_models(state_dict, family)
    if kind == "full":
        if len(parts) > 1:
            return export_diffusers(state_dict, family, kind)
        model, keys = next(iter(parts.items()), ("", {}))
        return layout.rename_for_comfyui(keys, kind) if model == layout.diffusion_model else keys
    out: dict[str, Any] = {}
    for model, keys in parts.items():
        if model == layout.diffusion_model:
            out.update(layout.rename_for_comfyui(keys, kind))
        else:
            out.update(with_prefix(component(family, model), keys))
    return out


def export_peft(state_dict: dict[str, Any], family: Any, kind: str) -> dict[str, Any]:
    """Bare module paths (peft's ``set_peft_model_state_dict``, DiffSynth-Studio)."""
    parts = split_models(state_dict, family)
    if kind == "full" and len(parts) > 1:
        return export_diffusers(state_dict, family, kind)
    return _merge(parts.values())


def detect_kohya(keys: Iterable[str]) -> bool:
    return any(_KOHYA.match(key) for key in keys)


def import_kohya(state_dict: dict[str, Any], module_names: list[str]) -> dict[str, Any]:
    """``lora_unet_blocks_0_attn_to_q.lora_down.weight`` -> ``blocks.0.attn.to_q.lora_down...``:
    underscores are ambiguous, so the model's own module names decide."""
    from ..errors import ModelFileError

    flat = {name.replace(".", "_"): name for name in module_names if name}
    out = {}
    for key, value in state_dict.items():
        module, dot, rest = key.partition(".")
        if _KOHYA.match(module):
            bare = _KOHYA.sub("", module)
            if bare not in flat:
                raise ModelFileError(f"LoRA key {key} matches no module of the model")
            key = flat[bare] + dot + rest
        out[key] = value
    return out


FORMATS = (
    LoraFormat("diffusers", "diffusers' load_lora_weights: each model under its component "
               "(transformer.)", export_diffusers),
    LoraFormat("comfyui", "ComfyUI: the diffusion model under diffusion_model., in the family's "
               "ComfyUI names", export_comfyui),
    LoraFormat("peft", "bare module paths (peft, DiffSynth-Studio)", export_peft),
    LoraFormat("kohya", "read only: kohya / musubi-tuner lora_unet_ names", None, detect_kohya,
               import_kohya),
)  # fmt: skip
