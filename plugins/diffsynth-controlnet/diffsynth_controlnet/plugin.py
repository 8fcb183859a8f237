"""The diffsynth plugin of Qwen-Image ControlNets (entry point ``qwen-image-controlnet``).

It extends another plugin's pipeline without editing it: its family's loader loads Qwen-Image
through the ``qwen-image`` plugin's loader and attaches the ControlNets, and its family's units
hook the ControlNet into the DiT call through the Qwen-Image pipeline's
``dit_extra_kwargs_fns`` input (see :func:`~diffsynth_controlnet.family.controlnet_family`:
loader, units and LoRA layout are declared there, so no hook tests the family's name). Its
own hook, ``diffsynth_register_control_kinds``, is added through ``diffsynth_addhooks``.

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffsynth_core import ModelFamily, hookimpl

from . import hookspecs
from .family import controlnet_family
from .kinds import builtin_canny


@hookimpl
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    register(controlnet_family())


@hookimpl
def diffsynth_register_commands(cli: Any) -> None:
    from .cli import controlnet

    cli.add_command(controlnet)


@hookimpl
def diffsynth_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def diffsynth_register_control_kinds(register: Callable[..., None]) -> None:
    register(
        "canny",
        builtin_canny,
        description="Canny edges (numpy): params low=100 high=200 sigma=1.0",
    )
