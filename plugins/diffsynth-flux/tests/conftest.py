"""Fixtures: the tiny FLUX.1 models (built once per session),
pipelines loaded from them, and diffusers' own pipelines on the same folders."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models are dominated by per-op overhead: one thread is faster than two, and far
    faster when other processes share the cores. Restored after each module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny presets in the official layout (built once, never committed)."""
    from diffsynth_flux.tiny import build_tiny

    root = tmp_path_factory.mktemp("flux-tiny")
    return {v: build_tiny(root / v, variant=v) for v in ("flux-dev", "flux-schnell")}


def load_tiny(folder: Path, variant: str) -> Any:
    """A fresh fp32 CPU pipeline through the core's load_pipeline and the family's files."""
    from diffsynth_core.pipeline import load_pipeline

    return load_pipeline(variant, model_path=str(folder), torch_dtype=torch.float32)


@pytest.fixture(scope="session")
def fresh_pipe(tiny_dirs: dict[str, Path]) -> Callable[[str], Any]:
    """Loads a new pipeline each call: for tests that change weights (LoRA, training)."""
    return lambda variant="flux-dev": load_tiny(tiny_dirs[variant], variant)


@pytest.fixture(scope="session")
def pipes(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    """Shared pipelines: tests that change their weights must load their own."""
    return {v: load_tiny(folder, v) for v, folder in tiny_dirs.items()}


def diffusers_flux(folder: Path) -> Any:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(folder))  # fp32 by default
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def load_diffusers() -> Callable[[Path], Any]:
    """Loads diffusers' FluxPipeline from a folder (fp32, no progress bars)."""
    return diffusers_flux


@pytest.fixture(scope="session")
def diffusers_pipes(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    """diffusers' own FluxPipeline on the same folders: the reference."""
    return {v: diffusers_flux(folder) for v, folder in tiny_dirs.items()}
