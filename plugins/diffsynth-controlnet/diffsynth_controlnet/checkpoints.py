"""Checkpoint keys of the ``qwen-image-controlnet`` family (``diffsynth_convert_state_dict``).

``diffsynth train`` cuts the family's ``remove_prefix_in_ckpt`` (``pipe.controlnet.``) from
trained parameter names, so ControlNet weights arrive with bare diffusers keys and DiT weights
(``--lora-base-model dit``) keep ``pipe.dit.``. Each is written where its loader looks:

============  ==========================  ====================================  ==========
weights       ControlNet                  DiT (LoRA on the DiT, ControlNet frozen)
============  ==========================  ====================================  ==========
full          bare diffusers keys: the file *is* a ``QwenImageControlNetModel`` state dict
LoRA diffusers ``controlnet.`` prefix      ``transformer.`` (``pipe.load_lora_weights``)
LoRA comfyui  ``controlnet.`` prefix       ``diffusion_model.``
LoRA peft     bare                        bare
============  ==========================  ====================================  ==========

A ControlNet LoRA never gets the DiT's prefixes: diffusers' pipeline loader would apply it to
the DiT, whose first blocks have the same module names, silently. It loads with
``controlnet.load_lora_adapter(file, prefix="controlnet")``.
"""

from __future__ import annotations

from typing import Any

CONTROLNET_KEYS = "pipe.controlnet."
DIT_KEYS = "pipe.dit."
LORA_PREFIXES = {
    "diffusers": {"controlnet": "controlnet.", "dit": "transformer."},
    "comfyui": {"controlnet": "controlnet.", "dit": "diffusion_model."},
    "peft": {"controlnet": "", "dit": ""},
}


def split_models(state_dict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Keys by the model they belong to, prefixes cut: ``{"controlnet": ..., "dit": ...}``."""
    parts: dict[str, dict[str, Any]] = {"controlnet": {}, "dit": {}}
    for key, value in state_dict.items():
        if key.startswith(DIT_KEYS):
            parts["dit"][key[len(DIT_KEYS) :]] = value
        else:
            parts["controlnet"][key.removeprefix(CONTROLNET_KEYS)] = value
    return parts


def convert(state_dict: dict[str, Any], format: str, kind: str) -> dict[str, Any] | None:
    """The file's keys for ``format`` (None: a format this family does not know)."""
    if format not in LORA_PREFIXES:
        return None
    parts = {name: keys for name, keys in split_models(state_dict).items() if keys}
    if kind == "full":
        if len(parts) == 1:  # one model: its own bare keys, what from_pretrained reads
            return next(iter(parts.values()), {})
        prefixes = LORA_PREFIXES["diffusers"]
    else:
        prefixes = LORA_PREFIXES[format]
    return {
        prefixes[name] + key: value for name, keys in parts.items() for key, value in keys.items()
    }
