"""The diffsynth plugin of Qwen-Image ControlNets (entry point ``qwen-image-controlnet``).

It extends another plugin's pipeline without editing it: the ``qwen-image`` plugin loads the
pipeline, and this one adds its unit through ``diffsynth_pipeline_units``; the unit hooks the
ControlNet into the DiT call through the Qwen-Image pipeline's ``dit_extra_kwargs_fns`` input.

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffsynth_core import ModelFamily, hookimpl

from .family import FAMILY, controlnet_family
from .kinds import builtin_canny


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    register(controlnet_family())


@hookimpl
def diffsynth_load_pipeline(
    family: Any,
    model_configs: dict[str, Any],
    device: str,
    torch_dtype: Any,
    options: dict[str, Any],
    purpose: str,
) -> Any:
    if family.name != FAMILY:
        return None
    from .loading import load_from_hook

    return load_from_hook(model_configs, device, torch_dtype, options, purpose)


@hookimpl
def diffsynth_pipeline_units(family: Any, pipe: Any) -> list[Any] | None:
    if family.name != FAMILY:
        return None
    from .units import control_units

    return control_units()


@hookimpl
def diffsynth_convert_state_dict(
    state_dict: dict[str, Any], format: str, family: Any, kind: str
) -> dict[str, Any] | None:
    if family is None or family.name != FAMILY:
        return None
    from .checkpoints import convert

    return convert(state_dict, format, kind)


@hookimpl
def diffsynth_register_commands(cli: Any) -> None:
    from .cli import controlnet

    cli.add_command(controlnet)


# optionalhook: the spec is this plugin's own, added to the manager on first use (see
# diffsynth_controlnet.hookspecs), so it is unknown while plugins are being registered.
@hookimpl(optionalhook=True)
def diffsynth_register_control_kinds(register: Callable[..., None]) -> None:
    register(
        "canny",
        builtin_canny,
        description="Canny edges (numpy): params low=100 high=200 sigma=1.0",
    )
