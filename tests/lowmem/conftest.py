"""Low-memory training tests: tiny models, runs driven through the CLI's own build."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is faster, and keeps float sums identical between runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    """accelerate's singletons and the plugin manager start clean in every test."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    from diffsynth_core.plugins import reset_plugin_manager

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    reset_plugin_manager(None)


@pytest.fixture(scope="session")
def qwen_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen-Image model in the official layout (built once)."""
    tiny = pytest.importorskip("diffsynth_qwen_image.tiny")
    return Path(tiny.build_tiny(tmp_path_factory.mktemp("qwen-tiny")))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffsynth_core.testing import make_image_dataset

    return Path(make_image_dataset(tmp_path_factory.mktemp("images") / "data", 4, 32))


def run_train(**settings: Any) -> Path:
    """``diffsynth train`` with these settings (flag names with underscores), in this process,
    through the CLI's own prepare and build; returns the output folder."""
    from accelerate.state import AcceleratorState, GradientState

    from diffsynth_core.cli.run.build import prepare, train

    cli = {"height": 32, "width": 32, "lora_rank": 4, "learning_rate": 1e-3, **settings}
    train(prepare(cli, None, []), echo=lambda line: None)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Path(cli["output"])


def losses(output: Path) -> list[float]:
    with (output / "logs" / "metrics.csv").open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def train_in_subprocess(qwen_tiny: Path, images: Path, output: Path, *flags: str) -> Any:
    """``diffsynth train`` on the tiny Qwen-Image in a fresh process (its own imports and
    output, as a user sees them), 32x32, LoRA rank 4; the CompletedProcess."""
    import os
    import subprocess
    import sys

    args = [
        "train", "--model", "qwen-image", "--model-path", str(qwen_tiny), "--dataset", str(images),
        "--output", str(output), "--height", "32", "--width", "32", "--lora-rank", "4", *flags,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSYNTH_")}
    return subprocess.run(
        [sys.executable, "-c", "from diffsynth_core.cli.main import main; main()", *args],
        capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
