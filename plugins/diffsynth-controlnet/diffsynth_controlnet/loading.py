"""Loading the ``qwen-image-controlnet`` pipeline: Qwen-Image's own loader, then ControlNets.

The Qwen-Image part goes through ``diffsynth_qwen_image.pipeline.load_qwen_image_pipeline`` (its
components are a subset of ours), so this family loads Qwen-Image exactly as ``qwen-image``
does. The ControlNet then comes, in this order, from the family options that
``diffsynth_load_pipeline`` receives (``diffsynth train`` / ``generate`` flags, or the keyword
arguments of :func:`load_controlnet_pipeline`):

1. ``controlnet``: folder(s) or trained checkpoint file(s);
2. ``controlnet_layers``: a new ControlNet from the DiT's first N blocks;

else from the ``controlnet`` model config: the InstantX repository, or a local copy given with
``--model-path`` (flat, or a ``controlnet/`` subfolder as diffusers saves it). A load whose
``purpose`` is ``"train"`` with none of these is an error: there would be nothing to train.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffsynth_core import ConfigError, ModelConfig, ModelFileError

from .family import FAMILY
from .files import CONTROLNET_FILE, CONTROLNET_SUBFOLDER
from .models import attach_controlnets, load_controlnet, new_controlnet, new_source, split_sources

logger = logging.getLogger(__name__)
CONTROL_COLUMNS = ("control_image", "control_mask")
NO_CONTROLNET = (
    "no ControlNet to train: pass --controlnet DIR (an existing ControlNet folder or a trained "
    "checkpoint) or --controlnet-layers N (a new ControlNet of the DiT's first N blocks), or "
    "put one in MODEL_PATH/controlnet/"
)


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


def load_controlnet_pipeline(
    model_configs: Mapping[str, ModelConfig] | None = None,
    device: str = "cpu",
    torch_dtype: Any = None,
    model_path: str | None = None,
    controlnet: str | list[str | os.PathLike[str]] | None = None,
    controlnet_layers: int | None = None,
    controlnet_inpaint: bool = False,
    purpose: str = "train",
) -> Any:
    """``load_pipeline("qwen-image-controlnet", ...)`` with the load-time options as keywords:
    the ControlNet folder(s) / checkpoint(s) to attach, or a new one of the DiT's first N
    blocks. For ``purpose="train"`` (the default: this is how a training script loads it) a
    missing ControlNet is an error (see :data:`NO_CONTROLNET`); pass ``"python"`` to load
    plain Qwen-Image and attach one later.
    """
    import torch

    from diffsynth_core import load_pipeline

    options = {
        "controlnet": controlnet,
        "controlnet_layers": controlnet_layers,
        "controlnet_inpaint": controlnet_inpaint,
    }
    return load_pipeline(
        FAMILY,
        model_configs,
        device=device,
        torch_dtype=torch_dtype or torch.float32,
        model_path=model_path,
        options={k: v for k, v in options.items() if v is not None},
        purpose=purpose,
    )


def load_from_hook(
    model_configs: Mapping[str, ModelConfig],
    device: str,
    torch_dtype: Any,
    options: Mapping[str, Any],
    purpose: str = "python",
) -> Any:
    """What ``diffsynth_load_pipeline`` does: Qwen-Image through its own loader, then the
    ControlNet(s) the options (or else the ``controlnet`` model config) name."""
    from diffsynth_qwen_image.pipeline import load_qwen_image_pipeline

    base = {name: cfg for name, cfg in model_configs.items() if name != "controlnet"}
    pipe = load_qwen_image_pipeline(base, device, torch_dtype)
    pass_control_columns(pipe)
    sources = split_sources(options.get("controlnet"))
    layers, inpaint = options.get("controlnet_layers"), bool(options.get("controlnet_inpaint"))
    if sources:
        models = [load_controlnet(s, pipe.dit, torch_dtype) for s in sources]
    elif layers:
        models, sources = (
            [new_controlnet(pipe.dit, int(layers), inpaint)],
            [new_source(int(layers), inpaint)],
        )
    else:
        if "controlnet" in model_configs:
            attach_configured(pipe, model_configs["controlnet"], torch_dtype)
        why = getattr(pipe, "controlnet_error", None)
        if purpose == "train" and getattr(pipe, "controlnet", None) is None:
            raise ConfigError(NO_CONTROLNET + (f" (the default one: {why})" if why else ""))
        if why:  # plain Qwen-Image until a control image asks for a ControlNet
            logger.warning("no ControlNet loaded (%s); give one with --controlnet DIR", why)
        return pipe
    attach_controlnets(pipe, models, sources)
    return pipe


def attach_configured(pipe: Any, config: ModelConfig, torch_dtype: Any) -> Any:
    """Attach the ControlNet of the family's model config when it can be found, else keep why
    in ``pipe.controlnet_error``: a missing one fails a training load only (without a control
    image the pipeline is plain Qwen-Image; with one, the unit's error repeats this one)."""
    try:
        folder = configured_controlnet(config)
    except ModelFileError as error:
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
