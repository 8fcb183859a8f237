"""ControlNet models: load (folder or trained checkpoint), create from the DiT, attach, save.

A ControlNet is diffusers' ``QwenImageControlNetModel``. On the pipeline it is
``pipe.controlnet``: the model itself when there is one (so its parameters are
``pipe.controlnet.<diffusers key>``, and a trained state dict is a diffusers state dict once
``pipe.controlnet.`` is cut), a ``torch.nn.ModuleList`` when there are several.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from diffsynth_core import ConfigError, ModelConfig, ModelFileError, load_state_dict

from .files import CONTROLNET_FILE, CONTROLNET_REPO, CONTROLNET_SUBFOLDER

CONFIG_FILE = "config.json"
# DiT config entries a ControlNet shares with its base model (not readable from its weights).
SHARED_CONFIG = ("patch_size", "out_channels", "axes_dims_rope")
# Written by whole-pipeline exports; cut so a checkpoint in either form loads.
KEY_PREFIXES = ("pipe.controlnet.", "controlnet.")


def split_sources(value: str | Sequence[str | os.PathLike[str]] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (empty entries dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [os.fspath(v) for v in value]
    return [item.strip() for item in items if item.strip()]


def controlnet_folder(path: Path) -> Path:
    """The folder holding a ControlNet's config.json: ``path`` itself, or its ``controlnet/``
    subfolder (a Qwen-Image copy saved by diffusers' ControlNet pipeline, or our tiny preset)."""
    for folder in (path, path / CONTROLNET_SUBFOLDER):
        weights = [f for f in folder.glob("diffusion_pytorch_model*") if f.is_file()]
        if (folder / CONFIG_FILE).is_file() and weights:
            return folder
    raise ModelFileError(
        f"{path} holds no ControlNet: expected {CONFIG_FILE} and {CONTROLNET_FILE} (the layout "
        f"of {CONTROLNET_REPO}), or a {CONTROLNET_SUBFOLDER}/ folder with them"
    )


def controlnet_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bare diffusers ControlNet keys; a LoRA file is refused (it needs its base ControlNet)."""
    if any(".lora_A." in k or ".lora_down." in k for k in state_dict):
        raise ModelFileError(
            "this checkpoint is a LoRA, not a whole ControlNet: load it over its base ControlNet "
            "(controlnet.load_lora_adapter(file, prefix='controlnet')) instead of exporting it"
        )
    out = {}
    for key, value in state_dict.items():
        for prefix in KEY_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    if "controlnet_x_embedder.weight" not in out:
        raise ModelFileError(
            "this checkpoint holds no ControlNet weights (no controlnet_x_embedder)"
        )
    return out


def infer_config(
    state_dict: Mapping[str, torch.Tensor], dit_config: Mapping[str, Any]
) -> dict[str, Any]:
    """A ControlNet config from its weights (sizes, layers, extra channels) and its DiT's config.

    The head size is the length of the per-head query norm; rope axes and patch size are not
    in any weight, so they come from the base DiT, which the ControlNet must match anyway.
    """
    blocks = {
        int(m.group(1)) for k in state_dict if (m := re.match(r"transformer_blocks\.(\d+)\.", k))
    }
    inner, in_channels = state_dict["img_in.weight"].shape
    head_dim = state_dict["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    condition = state_dict["controlnet_x_embedder.weight"].shape[1]
    return {
        **{key: dit_config[key] for key in SHARED_CONFIG if key in dit_config},
        "in_channels": int(in_channels),
        "num_layers": len(blocks),
        "attention_head_dim": int(head_dim),
        "num_attention_heads": int(inner // head_dim),
        "joint_attention_dim": int(state_dict["txt_in.weight"].shape[1]),
        "extra_condition_channels": int(condition - in_channels),
    }


def controlnet_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], dit_config: Mapping[str, Any], torch_dtype: torch.dtype
) -> Any:
    """A ControlNet holding ``state_dict`` (a trained checkpoint), config inferred."""
    from diffusers import QwenImageControlNetModel

    model = QwenImageControlNetModel.from_config(infer_config(state_dict, dit_config))
    missing, unexpected = model.load_state_dict(dict(state_dict), strict=False)
    if missing or unexpected:
        raise ModelFileError(
            f"checkpoint is not a whole ControlNet: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(a LoRA file? load its base ControlNet with --controlnet and the LoRA separately)"
        )
    return model if model.dtype == torch_dtype else model.to(torch_dtype)


def load_controlnet(
    source: str | os.PathLike[str], dit: Any, torch_dtype: torch.dtype, allow_pickle: bool = False
) -> Any:
    """A ControlNet from a diffusers folder, or from a trained ``.safetensors`` checkpoint."""
    from diffusers import QwenImageControlNetModel

    path = Path(source).expanduser()
    if path.is_file():
        state = controlnet_state_dict(load_state_dict(path, allow_pickle=allow_pickle))
        return controlnet_from_state_dict(state, dit.config, torch_dtype)
    if not path.exists():
        raise ModelFileError(
            f"ControlNet {path} does not exist (give a folder or a .safetensors file)"
        )
    folder = controlnet_folder(path)
    ModelConfig(path=folder, allow_pickle=allow_pickle).resolve()  # refuses pickle-only folders
    return QwenImageControlNetModel.from_pretrained(str(folder), torch_dtype=torch_dtype)


def new_controlnet(dit: Any, num_layers: int, inpaint: bool = False) -> Any:
    """A ControlNet made of the DiT's first ``num_layers`` blocks (diffusers' ``from_transformer``):
    embeddings and blocks copied, the control embedding and output projections zero, so it
    starts by changing nothing."""
    from diffusers import QwenImageControlNetModel

    if not 1 <= num_layers <= dit.config.num_layers:
        raise ConfigError(
            f"--controlnet-layers must be between 1 and {dit.config.num_layers}, not {num_layers}"
        )
    model = QwenImageControlNetModel.from_transformer(
        dit,
        num_layers=num_layers,
        attention_head_dim=dit.config.attention_head_dim,
        num_attention_heads=dit.config.num_attention_heads,
        extra_condition_channels=4 if inpaint else 0,
    )
    # diffusers warns about .to(dtype) on a model; only cast when the DiT is not fp32
    return model if dit.dtype == model.dtype else model.to(dtype=dit.dtype)


def new_source(num_layers: int, inpaint: bool = False) -> str:
    """How a new ControlNet is named in ``pipe.controlnet_sources``."""
    return f"new:{num_layers}" + (":inpaint" if inpaint else "")


def attach_controlnets(pipe: Any, models: Sequence[Any], sources: Sequence[str] = ()) -> None:
    """Set ``pipe.controlnet`` (one model, or a ModuleList of several) and list it as a model."""
    models = [m.to(pipe.device).eval() for m in models]
    pipe.controlnet = models[0] if len(models) == 1 else torch.nn.ModuleList(models)
    pipe.controlnet_sources = tuple(sources)
    if "controlnet" not in pipe.model_names:
        pipe.model_names = (*pipe.model_names, "controlnet")


def controlnets(pipe: Any) -> list[Any]:
    """The pipeline's ControlNets as a list (empty when none is attached)."""
    model = getattr(pipe, "controlnet", None)
    if model is None:
        return []
    return list(model) if isinstance(model, torch.nn.ModuleList) else [model]


def save_controlnet(
    model_or_state: Any, output: str | os.PathLike[str], config: Mapping[str, Any] | None = None
) -> Path:
    """Write a ControlNet in the diffusers / InstantX layout (config.json + safetensors)."""
    output = Path(output)
    if isinstance(model_or_state, torch.nn.Module):
        cast(Any, model_or_state).save_pretrained(str(output), safe_serialization=True)  # diffusers
        return output
    from safetensors.torch import save_file

    if config is None:
        raise ConfigError("saving a ControlNet state dict needs its config")
    output.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_or_state.items()}
    save_file(tensors, str(output / CONTROLNET_FILE), metadata={"format": "pt"})
    full = {"_class_name": "QwenImageControlNetModel", **config}
    (output / CONFIG_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return output
