"""Loading the ``qwen-image-controlnet`` pipeline: Qwen-Image's own loader, then ControlNets.

The Qwen-Image part goes through ``diffsynth_qwen_image.loader.load_qwen_image_pipeline`` (its
components are a subset of ours), so this family loads Qwen-Image exactly as ``qwen-image``
does. The ControlNet then comes, in this order, from the load-time options of
:func:`load_controlnet_pipeline`:

1. ``controlnet``: folder(s) or trained checkpoint file(s);
2. ``controlnet_layers``: a new ControlNet from the DiT's first N blocks;

else from the ``controlnet`` model config: the InstantX repository, or a local copy given with
``--model-path`` (flat, or a ``controlnet/`` subfolder as diffusers saves it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsynth_core.errors import ModelFileError
from diffsynth_core.loading import ModelConfig

from .family import CONTROLNET_FILE, CONTROLNET_SUBFOLDER, FAMILY
from .models import attach_controlnets, load_controlnet, new_controlnet, new_source, split_sources

logger = logging.getLogger(__name__)
CONTROL_COLUMNS = ("control_image", "control_mask")


def configured_controlnet(config: ModelConfig) -> Path:
    """The ControlNet folder a model config points at (local copies may nest it)."""
    try:
        return config.folder()
    except ModelFileError:
        if config.path is None or isinstance(config.path, list):
            raise
    return ModelConfig(
        path=config.path,
        origin_file_pattern=f"{CONTROLNET_SUBFOLDER}/{CONTROLNET_FILE}",
        allow_pickle=config.allow_pickle,
    ).folder()


@dataclass(frozen=True)
class LoadOptions:
    """The load-time family options (see the module docstring)."""

    controlnet: str | list[str | os.PathLike[str]] | None = None
    controlnet_layers: int | None = None
    controlnet_inpaint: bool = False


# diffsynth_load_pipeline receives no family options, so load_controlnet_pipeline hands them
# to the hook through this context variable (per thread / task, reset after the call).
_OPTIONS: ContextVar[LoadOptions | None] = ContextVar(
    "diffsynth_controlnet_load_options", default=None
)


def load_controlnet_pipeline(
    model_configs: Mapping[str, ModelConfig] | None = None,
    device: str = "cpu",
    torch_dtype: Any = None,
    model_path: str | None = None,
    controlnet: str | list[str | os.PathLike[str]] | None = None,
    controlnet_layers: int | None = None,
    controlnet_inpaint: bool = False,
) -> Any:
    """``load_pipeline("qwen-image-controlnet", ...)`` plus the load-time options: the
    ControlNet folder(s) / checkpoint(s) to attach, or a new one of the DiT's first N blocks.

    Goes through the core's ``load_pipeline``, so the plugin hooks (this family's units and
    any other plugin's) apply as for ``diffsynth train`` / ``generate``.
    """
    import torch

    from diffsynth_core.pipeline import load_pipeline

    options = LoadOptions(controlnet, controlnet_layers, controlnet_inpaint)
    token = _OPTIONS.set(options)
    try:
        dtype = torch_dtype or torch.float32
        return load_pipeline(
            FAMILY, model_configs, device=device, torch_dtype=dtype, model_path=model_path
        )
    finally:
        _OPTIONS.reset(token)


def load_from_hook(model_configs: Mapping[str, ModelConfig], device: str, torch_dtype: Any) -> Any:
    """What ``diffsynth_load_pipeline`` does: Qwen-Image through its own loader, then the
    ControlNet(s) the options (or else the ``controlnet`` model config) name."""
    from diffsynth_qwen_image.loader import load_qwen_image_pipeline

    base = {name: cfg for name, cfg in model_configs.items() if name != "controlnet"}
    pipe = load_qwen_image_pipeline(base, device, torch_dtype)
    pass_control_columns(pipe)
    options = _OPTIONS.get() or LoadOptions()
    sources = split_sources(options.controlnet)
    if sources:
        models = [load_controlnet(s, pipe.dit, torch_dtype) for s in sources]
    elif options.controlnet_layers:
        layers, inpaint = int(options.controlnet_layers), options.controlnet_inpaint
        models, sources = [new_controlnet(pipe.dit, layers, inpaint)], [new_source(layers, inpaint)]
    elif "controlnet" in model_configs:
        return attach_configured(pipe, model_configs["controlnet"], torch_dtype)
    else:
        return pipe  # attached later, from generate's --controlnet (see units.ensure_controlnets)
    attach_controlnets(pipe, models, sources)
    return pipe


def attach_configured(pipe: Any, config: ModelConfig, torch_dtype: Any) -> Any:
    """Attach the ControlNet of the family's model config when it can be found.

    A missing one does not fail the load: ``generate --controlnet DIR`` names it later (the
    unit loads it then), so a Qwen-Image copy without one is fine. Using the pipeline with a
    control image and no ControlNet is an error that repeats this one.
    """
    try:
        folder = configured_controlnet(config)
    except ModelFileError as error:
        logger.warning("no ControlNet loaded (%s); give one with --controlnet DIR", error)
        pipe.controlnet_error = str(error)
        return pipe
    attach_controlnets(pipe, [load_controlnet(folder, pipe.dit, torch_dtype)], [str(folder)])
    return pipe


def pass_control_columns(pipe: Any) -> None:
    """Make ``pipe.training_inputs`` carry the control columns of a batch into the inputs.

    Qwen-Image's ``training_inputs`` maps ``image`` and ``prompt`` only; the ControlNet unit
    also needs ``control_image`` / ``control_mask``. Wrapping the bound method on this one
    pipeline object extends it without editing the Qwen-Image plugin; columns the base method
    already passes through are left as it set them.
    """
    if not isinstance(pipe.training_inputs, ControlColumnInputs):
        pipe.training_inputs = ControlColumnInputs(pipe.training_inputs)


class ControlColumnInputs:
    """``training_inputs`` plus the control columns (an object, not a closure, so copying or
    pickling the pipeline keeps it bound to the right pipeline)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(
        self, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        shared, posi, nega = self.base(data)
        for column in CONTROL_COLUMNS:
            if column in data and column not in shared:
                shared[column] = data[column]
        return shared, posi, nega
