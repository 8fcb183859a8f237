"""The tiny Qwen-Image model on disk (built once per session) and pipelines loaded from it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffsynth_qwen_image")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qwen_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffsynth_qwen_image.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("qwen-image-tiny"))


@pytest.fixture(scope="session")
def load_qwen(qwen_tiny: Path) -> Callable[[], Any]:
    """A new fp32 CPU pipeline per call (tests change its weights)."""
    from diffsynth_core.pipeline import resolve_model_configs
    from diffsynth_qwen_image.family import qwen_image_family
    from diffsynth_qwen_image.pipeline import load_qwen_image_pipeline

    def load() -> Any:
        configs = resolve_model_configs(qwen_image_family(), model_path=str(qwen_tiny))
        return load_qwen_image_pipeline(configs, "cpu", torch.float32)

    return load
