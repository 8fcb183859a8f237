"""Trained ControlNet checkpoints -> the diffusers ControlNet layout.

``diffsynth train`` writes one flat safetensors file per checkpoint. For a fully trained
ControlNet its keys are already diffusers' (``pipe.controlnet.`` is cut, and full weights keep
bare keys in every export format), so the file *is* a ``QwenImageControlNetModel`` state dict;
only ``config.json`` is missing. Most of the config is read off the weights
(:func:`~diffsynth_controlnet.models.infer_config`); rope axes and patch size come from the
base DiT's config. So:

* ``--controlnet step-000100.safetensors`` loads a checkpoint directly (config from the DiT);
* :func:`export_checkpoint` / ``diffsynth controlnet export`` writes ``config.json`` +
  ``diffusion_pytorch_model.safetensors`` for diffusers and for sharing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffsynth_core import ConfigError, load_state_dict

from .models import controlnet_state_dict, infer_config, save_controlnet


def read_dit_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The DiT config from ``config.json``, a ``transformer/`` folder or a Qwen-Image folder."""
    path = Path(path)
    for candidate in (path, path / "config.json", path / "transformer" / "config.json"):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            if "num_layers" in config and "axes_dims_rope" in config:
                return config
    raise ConfigError(
        f"{path} holds no Qwen-Image DiT config (config.json with num_layers and "
        "axes_dims_rope); give the transformer's config.json or the Qwen-Image folder"
    )


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    base_config: str | os.PathLike[str],
    output: str | os.PathLike[str],
) -> Path:
    """Write ``checkpoint`` as a diffusers ControlNet folder in ``output``; returns it."""
    state = controlnet_state_dict(load_state_dict(checkpoint))
    config = infer_config(state, read_dit_config(base_config))
    return save_controlnet(state, output, config)
