"""The diffsynth plugin of FLUX.1 (entry point ``flux`` in the group ``diffsynth``).

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers: model code
is imported inside the hooks that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._core import ModelFamily, hookimpl
from .family import VARIANTS, families


def _is_flux(family: Any) -> bool:
    return family is not None and getattr(family, "name", None) in VARIANTS


def _is_flux_transformer(model: Any) -> bool:
    # by class name: this module must not import diffusers
    return any(c.__name__ == "FluxTransformer2DModel" for c in type(model).__mro__)


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    for family in families():
        register(family)


@hookimpl
def diffsynth_load_pipeline(
    family: Any, model_configs: dict[str, Any], device: str, torch_dtype: Any
) -> Any:
    if not _is_flux(family):
        return None
    from .loading import load_flux_pipeline

    return load_flux_pipeline(family.name, model_configs, device, torch_dtype)


@hookimpl
def diffsynth_convert_state_dict(
    state_dict: dict[str, Any], format: str, family: Any, kind: str
) -> dict[str, Any] | None:
    """``--lora-format comfyui`` for Flux: ComfyUI's own Flux names (fused qkv, ``double_blocks``)."""
    if format != "comfyui" or kind != "lora" or not _is_flux(family):
        return None
    from .comfyui import to_comfyui_lora

    return to_comfyui_lora(state_dict)


@hookimpl
def diffsynth_import_lora(
    state_dict: dict[str, Any], family: Any, model: Any
) -> dict[str, Any] | None:
    """Read LoRA files in ComfyUI's Flux names back onto diffusers' modules.

    Some callers pass no family (the core's conformance check), so a Flux transformer as
    ``model`` is enough: these names mean the same for every model of that class.
    """
    if not (_is_flux(family) or _is_flux_transformer(model)):
        return None
    from .comfyui import from_comfyui_lora

    return from_comfyui_lora(state_dict)
