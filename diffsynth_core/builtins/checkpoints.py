"""Built-in plugin: default checkpoint names and the peft / diffusers / ComfyUI key formats."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl

# The prefixes diffusers' ``load_lora_weights`` and ComfyUI look for. A LoRA without one of
# them loads into diffusers with no error and no effect, so ``peft`` is never the default.
FORMAT_PREFIXES = {"peft": "", "comfyui": "diffusion_model."}
FORMATS = ("diffusers", "comfyui", "peft")


@hookimpl(trylast=True)
def diffsynth_checkpoint_name(kind: str, step: int, epoch: int) -> str:
    """``step-000100.safetensors``, ``epoch-0.safetensors`` or ``final.safetensors``."""
    if kind == "step":
        return f"step-{step:06d}.safetensors"
    if kind == "epoch":
        return f"epoch-{epoch}.safetensors"
    return "final.safetensors"


@hookimpl(trylast=True)
def diffsynth_convert_state_dict(
    state_dict: dict[str, Any], format: str, family: Any, kind: str
) -> dict[str, Any] | None:
    """Prefix LoRA keys for diffusers / ComfyUI; full weights keep bare keys in every format.

    A full state dict is one component's weights: diffusers' ``from_pretrained`` and ComfyUI's
    diffusion-model loader both read it with bare keys, so only LoRA files get a prefix.
    """
    if format not in FORMATS:
        return None
    if kind == "full":
        return dict(state_dict)
    if format == "diffusers":
        component = family.defaults.export_prefix if family is not None else "transformer"
        prefix = f"{component}." if component else ""
    else:
        prefix = FORMAT_PREFIXES[format]
    return {prefix + key: value for key, value in state_dict.items()}
