"""Built-in plugin: default checkpoint names (the key formats are :mod:`.formats`)."""

from __future__ import annotations

from ..plugins import hookimpl


@hookimpl(trylast=True)
def diffsynth_checkpoint_name(kind: str, step: int, epoch: int) -> str:
    """``step-000100.safetensors``, ``epoch-0.safetensors`` or ``final.safetensors``."""
    if kind == "step":
        return f"step-{step:06d}.safetensors"
    if kind == "epoch":
        return f"epoch-{epoch}.safetensors"
    return "final.safetensors"
