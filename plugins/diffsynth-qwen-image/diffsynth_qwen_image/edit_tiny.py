"""The ``tiny`` presets of the edit families: Qwen-Image's tiny models plus ``processor/``.

``build_tiny_edit(folder)`` writes Qwen-Image-Edit's layout: the tiny Qwen-Image components
(whose Qwen2.5-VL already has a one-block vision tower), ``processor/`` (Qwen2.5-VL's image
processor with the official settings and the offline tokenizer) and a ``model_index.json``
naming ``QwenImageEditPipeline``. ``plus=True`` names ``QwenImageEditPlusPipeline``;
``zero_cond_t=True`` gives the DiT Qwen-Image-Edit-2511's zero-timestep conditioning of the
reference tokens (the plus preset has it, as the default plus weights are 2511's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def build_tiny_edit(
    folder: str | os.PathLike[str], plus: bool = False, zero_cond_t: bool | None = None
) -> Path:
    """Write a tiny Qwen-Image-Edit (``plus``: -2511, or -2509 with ``zero_cond_t=False``)."""
    from .tiny import build_tiny

    return make_edit_layout(Path(build_tiny(folder)), plus, zero_cond_t)


def make_edit_layout(folder: Path, plus: bool = False, zero_cond_t: bool | None = None) -> Path:
    """Turn a tiny Qwen-Image folder into an edit one (processor/, model_index.json, and for
    ``zero_cond_t`` -- by default with ``plus`` -- the 2511 DiT switch)."""
    from transformers import Qwen2Tokenizer

    from .edit_processor import default_image_processor, image_only_processor, save_processor

    zero = plus if zero_cond_t is None else zero_cond_t
    _set_config(folder / "transformer" / "config.json", zero_cond_t=zero)
    tokenizer = Qwen2Tokenizer.from_pretrained(str(folder / "tokenizer"))
    save_processor(image_only_processor(default_image_processor(), tokenizer), folder / "processor")
    name = "QwenImageEditPlusPipeline" if plus else "QwenImageEditPipeline"
    _set_config(
        folder / "model_index.json",
        _class_name=name,
        processor=["transformers", "Qwen2VLProcessor"],
    )
    return folder


def build_tiny_edit_plus(folder: str | os.PathLike[str]) -> Path:
    """The plus preset: Qwen-Image-Edit-2511's layout (zero-timestep reference tokens)."""
    return build_tiny_edit(folder, plus=True)


def _set_config(path: Path, **values: object) -> None:
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_edit_pipeline(folder: str | os.PathLike[str], plus: bool = False) -> Any:
    """An fp32 CPU edit pipeline of ``folder`` (a tiny preset, or any copy in the official
    layout) through ``load_pipeline`` and the family's default files: what tests compare."""
    import torch

    from diffsynth_core import load_pipeline

    family = "qwen-image-edit-plus" if plus else "qwen-image-edit"
    return load_pipeline(family, model_path=str(folder), torch_dtype=torch.float32)
