"""Built-in plugin: default checkpoint names and the peft / diffusers / ComfyUI key formats."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl

# The prefixes diffusers' ``load_lora_weights`` and ComfyUI look for. A LoRA without one of
# them loads into diffusers with no error and no effect, so ``peft`` is never the default.
FORMAT_PREFIXES = {"peft": "", "comfyui": "diffusion_model."}


@hookimpl(trylast=True)
def diffsynth_checkpoint_name(kind: str, step: int, epoch: int) -> str:
    if kind == "step":
        return f"step-{step:06d}.safetensors"
    if kind == "epoch":
        return f"epoch-{epoch}.safetensors"
    return "final.safetensors"


@hookimpl(trylast=True)
def diffsynth_convert_state_dict(
    state_dict: dict[str, Any], format: str, family: Any
) -> dict[str, Any] | None:
    if format == "diffusers":
        component = family.defaults.export_prefix if family is not None else "transformer"
        prefix = f"{component}." if component else ""
    elif format in FORMAT_PREFIXES:
        prefix = FORMAT_PREFIXES[format]
    else:
        return None
    return {prefix + key: value for key, value in state_dict.items()}
