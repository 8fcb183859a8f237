"""Fixtures: the tiny Qwen-Image + ControlNet model, built once per session, and pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

FAMILY = "qwen-image-controlnet"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset: Qwen-Image layout plus ``controlnet/`` (built once, never committed)."""
    from diffsynth_controlnet.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("qwen-image-controlnet-tiny"))


def load_tiny(tiny_dir: Path, **options: Any) -> Any:
    """A fresh fp32 CPU pipeline through the plugin hooks (so the ControlNet units are added),
    with load-time options (``controlnet=``, ``controlnet_layers=``) when given."""
    from diffsynth_controlnet.loading import load_controlnet_pipeline

    return load_controlnet_pipeline(model_path=str(tiny_dir), **options)


def copy_pipe(pipe: Any, controlnet_layers: int | None = None) -> Any:
    """A pipeline sharing ``pipe``'s frozen VAE and text encoder, with its own copies of the
    DiT and ControlNet (or a new ControlNet of the DiT's first N blocks): no disk I/O."""
    import copy

    from diffsynth_controlnet.loading import pass_control_columns
    from diffsynth_controlnet.models import attach_controlnets, new_controlnet, new_source
    from diffsynth_controlnet.units import control_units
    from diffsynth_qwen_image.pipeline import QwenImagePipeline

    new = QwenImagePipeline(
        dit=copy.deepcopy(pipe.dit),
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
    )
    pass_control_columns(new)
    net = (
        new_controlnet(new.dit, controlnet_layers)
        if controlnet_layers
        else copy.deepcopy(pipe.controlnet)
    )
    sources = (
        [new_source(controlnet_layers)] if controlnet_layers else list(pipe.controlnet_sources)
    )
    attach_controlnets(new, [net], sources)
    new.family = pipe.family
    new.add_units(control_units())
    return new


@pytest.fixture(scope="session")
def load_pipe(tiny_dir: Path) -> Any:
    """``load_pipe(**kwargs)``: a fresh pipeline from the tiny folder (see :func:`load_tiny`)."""
    return lambda **kwargs: load_tiny(tiny_dir, **kwargs)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_dir: Path) -> Any:
    """A shared pipeline: tests that change its weights or ControlNets use ``fresh_pipe``."""
    return load_tiny(tiny_dir)


@pytest.fixture()
def fresh_pipe(tiny_pipe: Any) -> Any:
    """``fresh_pipe(controlnet_layers=None)``: see :func:`copy_pipe`."""
    return lambda controlnet_layers=None: copy_pipe(tiny_pipe, controlnet_layers)


@pytest.fixture(scope="session")
def diffusers_pipe(tiny_dir: Path) -> Any:
    """diffusers' own QwenImageControlNetPipeline on the same folder: the reference."""
    from diffusers import QwenImageControlNetPipeline

    pipe = QwenImageControlNetPipeline.from_pretrained(str(tiny_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def edge_image(
    size: tuple[int, int] = (64, 64), box: tuple[int, int, int, int] = (16, 12, 48, 44)
) -> Image.Image:
    """White outline of a box on black: what a canny control image looks like."""
    image = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(image).rectangle(box, outline=(255, 255, 255), width=2)
    return image


@pytest.fixture(scope="session")
def make_edge_image() -> Any:
    """``make_edge_image(size, box)``: see :func:`edge_image`."""
    return edge_image


@pytest.fixture()
def control_a() -> Image.Image:
    return edge_image()


@pytest.fixture()
def control_b() -> Image.Image:
    return edge_image(box=(4, 30, 60, 40))


@pytest.fixture(scope="session")
def initial_latents() -> torch.Tensor:
    """Packed initial noise for a 64x64 image, shared by ours and diffusers'."""
    return torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(11))
