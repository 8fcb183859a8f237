"""Load the pipeline's components from ``ModelConfig``s (official diffusers repository layout).

Each component folder is read with its class's own ``from_pretrained`` (config.json plus
safetensors shards), so real weights and the tiny preset take the same path. The scheduler
config is optional: it is read from ``scheduler/`` beside ``transformer/`` when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diffsynth_core import ConfigError, ModelConfig, load_single_file

from .sampler import read_scheduler_config

COMPONENTS = ("dit", "vae", "text_encoder", "tokenizer")
# the repository folder of each component, to sort the seed's plain list of ModelConfigs
FOLDERS = {
    "transformer": "dit",
    "vae": "vae",
    "text_encoder": "text_encoder",
    "tokenizer": "tokenizer",
    "scheduler": "scheduler",
}


def repo_model_configs(model_path: str | None, model_id: str | None) -> dict[str, ModelConfig]:
    """ModelConfigs for every component of a local repository copy or a hub id."""
    from .family import REPO_1_3B, model_files

    files = model_files(model_id or REPO_1_3B)
    if model_path is not None:
        return {
            k: ModelConfig(path=model_path, origin_file_pattern=f.origin_file_pattern)
            for k, f in files.items()
        }
    return {
        k: ModelConfig(model_id=f.model_id, origin_file_pattern=f.origin_file_pattern)
        for k, f in files.items()
    }


def by_component(
    model_configs: Mapping[str, ModelConfig] | list[ModelConfig],
) -> dict[str, ModelConfig]:
    """A mapping as is; a list sorted by the first folder of each config's file pattern (the
    seed's form), with ``tokenizer/`` beside the text encoder when no config names it."""
    if isinstance(model_configs, Mapping):
        return dict(model_configs)
    out = {}
    for config in model_configs:
        folder = (config.origin_file_pattern or "").split("/", 1)[0]
        if folder not in FOLDERS:
            raise ConfigError(
                f"cannot tell which component {config.describe()} is: its file pattern should start "
                f"with one of {', '.join(FOLDERS)}/"
            )
        out[FOLDERS[folder]] = config
    text = out.get("text_encoder")
    if "tokenizer" not in out and text is not None:
        out["tokenizer"] = ModelConfig(
            path=text.path,
            model_id=text.model_id,
            origin_file_pattern="tokenizer/",
            source=text.source,
        )
    return out


def scheduler_folder(configs: Mapping[str, ModelConfig], dit_folder: Path | None) -> Path | None:
    if "scheduler" in configs:
        return configs["scheduler"].folder()
    if dit_folder is None:
        return None
    candidate = dit_folder.parent / "scheduler"
    return candidate if candidate.is_dir() else None


def load_components(
    model_configs: Mapping[str, ModelConfig] | list[ModelConfig], torch_dtype: torch.dtype
) -> dict[str, Any]:
    """``dit``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler_config``, loaded
    (``None`` for a component the configs leave out)."""
    configs = by_component(model_configs)
    # a component left out stays None (training from a cache does not load the VAE or UMT5)
    parts: dict[str, Any] = {
        name: _load_part(name, configs[name], torch_dtype) if name in configs else None
        for name in COMPONENTS
    }
    dit = configs.get("dit")
    # a single file (--transformer FILE): its scheduler/ is beside the folder it replaces
    source = dit.like if dit is not None and dit.single_file and dit.like and dit.like.path else dit
    parts["scheduler_config"] = read_scheduler_config(
        scheduler_folder(configs, source.folder() if source is not None else None)
    )
    return parts


def _load_part(name: str, config: ModelConfig, torch_dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    if name == "tokenizer":
        return AutoTokenizer.from_pretrained(config.folder())
    classes = {"dit": WanVACETransformer3DModel, "vae": AutoencoderKLWan, "text_encoder": UMT5EncoderModel}
    return _load(classes[name], config, torch_dtype).eval()


def _load(cls: Any, config: ModelConfig, torch_dtype: torch.dtype) -> Any:
    """``from_pretrained`` on the component's folder, or diffusers' single-file loading."""
    if config.single_file:
        return load_single_file(cls, config, torch_dtype)
    return cls.from_pretrained(config.folder(), torch_dtype=torch_dtype)
