"""Fixtures: the tiny Qwen-Image model, built once per session, and pipelines loaded from it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from diffsynth_core.pipeline import resolve_model_configs
from diffsynth_qwen_image.family import qwen_image_family
from diffsynth_qwen_image.pipeline import QwenImagePipeline, load_qwen_image_pipeline


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models are dominated by per-op overhead: one thread is faster than two, and far
    faster when other processes share the cores. Restored after each module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset in the official layout (built once, never committed)."""
    from diffsynth_qwen_image.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("qwen-image-tiny"))


def load_tiny(tiny_dir: Path) -> QwenImagePipeline:
    """A fresh fp32 CPU pipeline from the tiny folder, through the family's default files."""
    configs = resolve_model_configs(qwen_image_family(), model_path=str(tiny_dir))
    return load_qwen_image_pipeline(configs, "cpu", torch.float32)


@pytest.fixture(scope="session")
def fresh_pipe(tiny_dir: Path) -> Callable[[], QwenImagePipeline]:
    """Loads a new pipeline each call: for tests that change weights (LoRA, training)."""
    return lambda: load_tiny(tiny_dir)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_dir: Path) -> QwenImagePipeline:
    """A shared pipeline: tests that change its weights must load their own."""
    return load_tiny(tiny_dir)


@pytest.fixture(scope="session")
def diffusers_pipe(tiny_dir: Path) -> Any:
    """diffusers' own QwenImagePipeline on the same folder: the reference."""
    from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

    pipe = DiffusersQwenImagePipeline.from_pretrained(str(tiny_dir))  # fp32 by default
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def square_image() -> Image.Image:
    """A 64x64 picture with some structure (a red disc on blue)."""
    from PIL import ImageDraw

    image = Image.new("RGB", (64, 64), (30, 60, 200))
    ImageDraw.Draw(image).ellipse((16, 12, 48, 44), fill=(220, 40, 40))
    return image


def _edit_copy(tiny_dir: Path, folder: Path, plus: bool, zero_cond_t: bool | None = None) -> Path:
    import shutil

    from diffsynth_qwen_image.edit_tiny import make_edit_layout

    shutil.copytree(tiny_dir, folder)
    return make_edit_layout(folder, plus, zero_cond_t)


@pytest.fixture(scope="session")
def edit_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen-Image-Edit preset (the tiny Qwen-Image weights plus processor/)."""
    return _edit_copy(tiny_dir, tmp_path_factory.mktemp("edit") / "tiny", plus=False)


@pytest.fixture(scope="session")
def edit_plus_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen-Image-Edit-2511 preset (zero-timestep reference tokens)."""
    return _edit_copy(tiny_dir, tmp_path_factory.mktemp("edit-plus") / "tiny", plus=True)


@pytest.fixture(scope="session")
def edit_2509_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen-Image-Edit-2509 preset (no zero-timestep conditioning)."""
    folder = tmp_path_factory.mktemp("edit-2509") / "tiny"
    return _edit_copy(tiny_dir, folder, plus=True, zero_cond_t=False)


@pytest.fixture()
def edit_images() -> list[Image.Image]:
    """Three small pictures of different aspect ratios (shapes on plain backgrounds)."""
    from PIL import ImageDraw

    images = []
    for size, colour in (
        ((80, 64), (220, 40, 40)),
        ((64, 64), (40, 200, 40)),
        ((48, 72), (240, 220, 30)),
    ):
        image = Image.new("RGB", size, (30, 60, 200))
        ImageDraw.Draw(image).rectangle((8, 8, size[0] // 2, size[1] // 2), fill=colour)
        images.append(image)
    return images
