"""Single-file checkpoints (``--transformer FILE``, ``--vae FILE``) through diffusers' loader.

A family's loader calls :func:`load_single_file` for a component whose
:class:`~diffsynth_core.loading.ModelConfig` has ``single_file=True``. The file is read here
(safetensors, pickle on opt-in), ComfyUI's packaging undone (the ``model.diffusion_model.``
prefix; "scaled fp8" weights multiplied by their ``scale_weight``), and the state dict handed to
diffusers' ``FromOriginalModelMixin.from_single_file``, which converts original key layouts to
diffusers' (Wan, FLUX ...) for the classes it supports. The model's config.json comes from the
repository-layout config the file replaces (``ModelConfig.like``: the ``--model-path`` folder,
the tiny preset, or the hub repository's config alone), since diffusers cannot always infer it
from the keys. fp8 weights are cast to the run's dtype. A file that leaves weights of the model
unset, or whose shapes do not fit, is one error naming the layout expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ModelFileError
from .loading import ModelConfig, load_state_dict

# ComfyUI packs a diffusion model's weights under these prefixes
PACKAGING_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def load_single_file(cls: Any, config: ModelConfig, torch_dtype: Any) -> Any:
    """``cls`` (a diffusers model class) from the single file ``config.path``."""
    file = Path(str(config.path))
    supported = _single_file_classes()
    if cls.__name__ not in supported or not hasattr(cls, "from_single_file"):
        raise ModelFileError(
            f"{file}: {cls.__name__} cannot be loaded from a single file (diffusers' single-file "
            f"loading supports {', '.join(sorted(n for n in supported if 'Qwen' in n or 'Wan' in n or 'Flux' in n))} "
            "...): give this component in the repository layout (its folder with config.json)"
        )
    state = unpack_comfyui(load_state_dict(file, allow_pickle=config.allow_pickle))
    try:
        model = cls.from_single_file(state, torch_dtype=torch_dtype, **_config_source(config))
    except (ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{file} is not a {cls.__name__} checkpoint: {first}. {_layout(cls)}") from exc
    unset = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unset:
        raise ModelFileError(
            f"{file} is not a {cls.__name__} checkpoint: {len(unset)} of its weights are not in "
            f"the file ({unset[0]} ...). {_layout(cls)}"
        )
    return model


def unpack_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """Keys without ComfyUI's prefix; scaled fp8 weights as float32 ``weight * scale_weight``."""
    import torch

    for prefix in PACKAGING_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            break
    scales = {k.removesuffix(".scale_weight"): v for k, v in state.items() if k.endswith(".scale_weight")}
    out = {}
    for key, value in state.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue  # ComfyUI's markers of a scaled fp8 file, folded in below
        layer = key.removesuffix(".weight")
        if key.endswith(".weight") and layer in scales:
            value = value.to(torch.float32) * scales[layer].to(torch.float32)
        out[key] = value
    return out


def _config_source(config: ModelConfig) -> dict[str, Any]:
    """``config=`` / ``subfolder=`` of from_single_file: the folder (or hub repository) whose
    config.json describes the model in the file."""
    like = config.like
    if like is None:
        return {}  # diffusers infers the model from the keys (fetching its config)
    sub = os.path.dirname((like.origin_file_pattern or "").rstrip("/"))
    if like.path is not None:
        folder = Path(str(like.path)).expanduser() / sub
        if (folder / "config.json").is_file():
            return {"config": str(folder)}
        raise ModelFileError(
            f"{config.path}: the model's config.json is not in {folder}; single files take their "
            "config from --model-path (the repository layout) or the hub repository"
        )
    return {"config": like.model_id, "subfolder": sub or None}


def _single_file_classes() -> set[str]:
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    return set(SINGLE_FILE_LOADABLE_CLASSES)


def _layout(cls: Any) -> str:
    return (
        f"Expected a {cls.__name__} file: diffusers' keys or the original model's "
        "(optionally under ComfyUI's model.diffusion_model. prefix), as one .safetensors file"
    )
