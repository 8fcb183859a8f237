"""``diffsynth train --blocks-to-swap`` end to end on the tiny Qwen-Image (CPU)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only contends
    yield
    torch.set_num_threads(before)


def _train(tmp_path: Path, name: str, *extra: str) -> Path:
    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager
    from diffsynth_core.testing import make_image_dataset

    manager = build_plugin_manager()
    if "qwen-image" not in manager.families:
        pytest.skip("the qwen-image plugin is not installed")
    reset_plugin_manager(manager)
    data = tmp_path / "data"
    if not data.exists():
        make_image_dataset(data, 2, 32)
    out = tmp_path / name
    args = ["train", "--model", "qwen-image", "--preset", "tiny", "--dataset", str(data),
            "--output", str(out), "--max-steps", "2", "--height", "32", "--width", "32", *extra]  # fmt: skip
    env = {"DIFFSYNTH_CACHE": str(tmp_path / "cache"), "DIFFSYNTH_DEBUG": ""}
    result = CliRunner().invoke(build_cli(manager), args, env=env)
    assert result.exit_code == 0, result.output
    return out


def _losses(out: Path) -> list[str]:
    with (out / "logs" / "metrics.csv").open() as f:
        return [row["loss"] for row in csv.DictReader(f)]


def test_swap_reaches_the_model_and_trains_as_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsynth_core.training import swap as swap_module

    installed: list[Any] = []
    original = swap_module.install_block_swap

    def spy(*args: Any) -> Any:
        installed.append(original(*args))
        installed[-1].trace = []
        return installed[-1]

    monkeypatch.setattr(swap_module, "install_block_swap", spy)
    swapped = _train(tmp_path, "swap", "--blocks-to-swap", "2")
    plain = _train(tmp_path, "plain")
    assert len(installed) == 1 and installed[0].swapped == [0, 1]
    assert {phase for what, _, phase in installed[0].trace if what == "use"} == {"forward", "backward"}
    assert _losses(swapped) == _losses(plain)
    # the LoRA files: equal up to the CPU kernels' alignment-dependent rounding
    # (tests/lowmem/test_swap_models.py shows the bitwise equality with aligned weights)
    a, b = load_file(str(swapped / "final.safetensors")), load_file(str(plain / "final.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
