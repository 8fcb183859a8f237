"""Fixtures: the tiny Wan VACE model, built once per test session, and a fresh pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset in the official layout (loads in diffusers and in diffsynth)."""
    from diffsynth_vace.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("wan-vace-tiny"))


@pytest.fixture
def pipe(tiny_dir: Path):
    """A fresh WanVacePipeline on the tiny weights, loaded through the plugin hook."""
    from diffsynth_core.pipeline import load_pipeline

    return load_pipeline("wan-vace", model_path=str(tiny_dir))


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's convolutions are too small to split: with two threads on a shared
    2-core machine the VAE runs up to ten times slower than with one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
