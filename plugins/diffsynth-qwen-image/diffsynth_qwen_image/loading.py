"""Loading Qwen-Image components from ModelConfigs (the official repository layout).

Each component is read with its library's own ``from_pretrained`` on the folder a
:class:`~diffsynth_core.loading.ModelConfig` resolves to, so sharded checkpoints, configs and
dtypes are handled exactly as diffusers / transformers handle them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from diffsynth_core import ConfigError, ModelConfig, ModelFileError, load_single_file

FAMILY = "qwen-image"
REPO = "Qwen/Qwen-Image"

# folder names of the official layout (and DiffSynth's names) -> our component names
FOLDER_COMPONENTS = {
    "transformer": "dit",
    "dit": "dit",
    "text_encoder": "text_encoder",
    "vae": "vae",
    "tokenizer": "tokenizer",
}


def component_of(config: ModelConfig) -> str:
    """Which component a seed-style ModelConfig names, from its pattern or path folders."""
    candidates: list[str] = []
    if config.origin_file_pattern:
        candidates += list(PurePath(config.origin_file_pattern).parts)
    paths = config.path if isinstance(config.path, list) else [config.path]
    for p in paths:
        if p is not None:
            candidates += list(reversed(PurePath(p).parts))
    for part in candidates:
        if part in FOLDER_COMPONENTS:
            return FOLDER_COMPONENTS[part]
    raise ConfigError(
        f"cannot tell which Qwen-Image component {config.describe()} is: its pattern or path "
        "should contain one of the folders transformer/, text_encoder/, vae/, tokenizer/"
    )


def configs_by_component(
    model_configs: Sequence[ModelConfig], tokenizer_config: ModelConfig | None = None
) -> dict[str, ModelConfig]:
    """Seed-style config list -> ``{component: ModelConfig}``; the tokenizer defaults to the
    ``tokenizer/`` folder beside the text encoder, else the hub repository's."""
    configs = {component_of(c): c for c in model_configs}
    if tokenizer_config is not None:
        configs["tokenizer"] = tokenizer_config
    elif "tokenizer" not in configs:
        configs["tokenizer"] = _default_tokenizer(configs.get("text_encoder"))
    return configs


def _default_tokenizer(text_encoder: ModelConfig | None) -> ModelConfig:
    if text_encoder is not None and text_encoder.path is not None:
        beside = text_encoder.folder().parent / "tokenizer"
        if beside.is_dir():
            return ModelConfig(path=beside)
    return ModelConfig(model_id=REPO, origin_file_pattern="tokenizer/")


def _folder(config: ModelConfig, component: str) -> Path:
    folder = config.folder()
    if component != "tokenizer" and not (folder / "config.json").is_file():
        raise ModelFileError(
            f"{config.describe()} has no config.json beside its weights ({folder}); Qwen-Image "
            "components are read in the official repository layout"
        )
    return folder


def load_component(component: str, config: ModelConfig, torch_dtype: Any) -> Any:
    """One component, loaded by the library that defines it (a single file: diffusers'
    single-file loading, for the transformer and the VAE)."""
    if config.single_file:
        return load_single_file(_class_of(component), config, torch_dtype)
    folder = str(_folder(config, component))
    if component == "dit":
        from diffusers import QwenImageTransformer2DModel

        return QwenImageTransformer2DModel.from_pretrained(folder, torch_dtype=torch_dtype)
    if component == "vae":
        from diffusers import AutoencoderKLQwenImage

        return AutoencoderKLQwenImage.from_pretrained(folder, torch_dtype=torch_dtype)
    if component == "text_encoder":
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder, **_dtype_kwarg(torch_dtype)
        )
    if component == "tokenizer":
        from transformers import Qwen2Tokenizer

        return Qwen2Tokenizer.from_pretrained(folder)
    raise ConfigError(
        f"Qwen-Image has no component {component!r} (dit, vae, text_encoder, tokenizer)"
    )


def _class_of(component: str) -> Any:
    if component == "dit":
        from diffusers import QwenImageTransformer2DModel

        return QwenImageTransformer2DModel
    if component == "vae":
        from diffusers import AutoencoderKLQwenImage

        return AutoencoderKLQwenImage
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration  # load_single_file: not single-file loadable


def _dtype_kwarg(torch_dtype: Any) -> dict[str, Any]:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56 (the old name now warns)."""
    import transformers
    from packaging.version import Version

    new = Version(transformers.__version__) >= Version("4.56")
    return {"dtype" if new else "torch_dtype": torch_dtype}


def scheduler_config(dit_config: ModelConfig | None) -> dict[str, Any] | None:
    """``scheduler/scheduler_config.json`` beside the transformer folder, if there is one."""
    if dit_config is not None and dit_config.single_file:  # beside the folder it replaces
        dit_config = dit_config.like if dit_config.like and dit_config.like.path else None
    if dit_config is None:
        return None
    path = dit_config.folder().parent / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else None
