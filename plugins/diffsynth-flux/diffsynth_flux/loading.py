"""Loading FLUX.1 components from ModelConfigs (the official repository layout).

Each component is read with its library's own ``from_pretrained`` on the folder a ModelConfig
resolves to, so sharded checkpoints, configs and dtypes are handled exactly as diffusers /
transformers handle them (and the tiny preset, written in the same layout, takes this path).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._core import ConfigError, ModelConfig, ModelFileError
from .family import COMPONENT_FOLDERS


def _folder(config: ModelConfig, component: str) -> Path:
    folder = config.folder()
    if not component.startswith("tokenizer") and not (folder / "config.json").is_file():
        raise ModelFileError(
            f"{config.describe()} has no config.json beside its weights ({folder}); FLUX.1 "
            "components are read in the official repository layout (transformer/, vae/ ...)"
        )
    return folder


def _dtype_kwarg(torch_dtype: Any) -> dict[str, Any]:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56 (the old name now warns)."""
    import transformers
    from packaging.version import Version

    new = Version(transformers.__version__) >= Version("4.56")
    return {"dtype" if new else "torch_dtype": torch_dtype}


def load_component(component: str, config: ModelConfig, torch_dtype: Any) -> Any:
    """One component, loaded by the library that defines it (a single file: diffusers'
    single-file loading, for the transformer and the VAE)."""
    if config.single_file:
        from diffusers import AutoencoderKL, FluxTransformer2DModel

        from ._core import load_single_file

        cls = {"dit": FluxTransformer2DModel, "vae": AutoencoderKL}.get(component)
        if cls is None:
            from transformers import CLIPTextModel

            cls = CLIPTextModel  # load_single_file: a class without single-file loading
        return load_single_file(cls, config, torch_dtype)
    folder = str(_folder(config, component))
    if component == "dit":
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch_dtype)
    if component == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(folder, torch_dtype=torch_dtype)
    if component == "text_encoder":
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(folder, **_dtype_kwarg(torch_dtype))
    if component == "text_encoder_2":
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(folder, **_dtype_kwarg(torch_dtype))
    if component == "tokenizer":
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(folder)
    if component == "tokenizer_2":
        from transformers import T5TokenizerFast

        return T5TokenizerFast.from_pretrained(folder)
    raise ConfigError(f"FLUX.1 has no component {component!r} ({', '.join(COMPONENT_FOLDERS)})")


def scheduler_config(dit_config: ModelConfig | None) -> dict[str, Any] | None:
    """``scheduler/scheduler_config.json`` beside the transformer folder, if there is one."""
    if dit_config is None:
        return None
    path = dit_config.folder().parent / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_family_pipeline(
    family: Any, model_configs: Mapping[str, ModelConfig], device: str, torch_dtype: Any
) -> Any:
    """The families' ``loader``: the pipeline of the variant ``family`` names."""
    return load_flux_pipeline(family.name, model_configs, device, torch_dtype)


def load_flux_pipeline(
    family: str, model_configs: Mapping[str, ModelConfig], device: str, torch_dtype: Any
) -> Any:
    """Build a :class:`FluxPipeline` from component configs (missing ones stay ``None``)."""
    from .pipeline import FluxPipeline

    models = {name: load_component(name, cfg, torch_dtype) for name, cfg in model_configs.items()}
    pipe = FluxPipeline(
        device=device,
        torch_dtype=torch_dtype,
        scheduler_config=scheduler_config(model_configs.get("dit")),
        variant=family,
        **models,
    )
    for name in pipe.model_names:
        model = getattr(pipe, name)
        if model is not None:
            model.eval().to(device)
    return pipe
