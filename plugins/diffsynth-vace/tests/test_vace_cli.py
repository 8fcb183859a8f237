"""End to end through the ``diffsynth`` command (in process, with click's CliRunner):
``train`` on the bundled clips with the tiny preset, then ``generate`` with and without the
LoRA it wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from vace_helpers import EXAMPLE_DATA

pytestmark = pytest.mark.slow


def invoke(args: list[str]) -> Result:
    from diffsynth_core.cli.main import build_cli

    result = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def frames(path: Path) -> np.ndarray:
    from diffsynth_core.data.video import read_frames

    return np.stack([np.asarray(f, dtype=np.float32) for f in read_frames(path, 81)])


def test_train_then_generate_with_the_lora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    invoke([
        "train", "--model", "wan-vace", "--preset", "tiny", "--dataset", str(EXAMPLE_DATA), "--output", str(run),
        "--max-steps", "3", "--num-frames", "9", "--lora-rank", "4", "--learning-rate", "2e-2",
    ])  # fmt: skip
    lora = load_file(run / "final.safetensors")
    assert lora and all(k.startswith("transformer.") and ".lora_" in k for k in lora)
    assert any(k.startswith("transformer.vace_blocks.") for k in lora)
    assert (run / "training_args.json").is_file()

    common = [
        "generate", "--model", "wan-vace", "--preset", "tiny", "--prompt", "a red circle moves right", "--seed", "3",
        "--height", "32", "--width", "32", "--steps", "2", "--num-frames", "5",
        "--vace-video", str(EXAMPLE_DATA / "control" / "red_circle_edges.mp4"),
    ]  # fmt: skip
    invoke([*common, "--output", str(tmp_path / "plain.mp4")])
    result = invoke(
        [*common, "--lora", str(run / "final.safetensors"), "--output", str(tmp_path / "lora.mp4")]
    )
    assert "60 module(s) changed" in result.output
    plain, tuned = frames(tmp_path / "plain.mp4"), frames(tmp_path / "lora.mp4")
    assert plain.shape == tuned.shape == (5, 32, 32, 3)
    print(f"LoRA changes the clip by {np.abs(plain - tuned).mean():.2f} grey levels on average")
    assert np.abs(plain - tuned).mean() > 1.0
