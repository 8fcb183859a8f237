"""End to end through the CLI: train the tiny ControlNet on the bundled data, export it, and
generate with it: the control image changes the picture, scale 0 gives plain Qwen-Image's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

DATA = Path(__file__).resolve().parents[3] / "examples" / "qwen_image_controlnet" / "data"
SIZE = ["--height", "64", "--width", "64", "--steps", "3", "--seed", "1", "--prompt", "a red house"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``cli(*args)``: run ``diffsynth ...`` in-process with a private tiny-model cache."""
    cache = tmp_path_factory.mktemp("cache")

    def invoke(*args: str) -> Any:
        from diffsynth_core.cli.main import build_cli

        result = CliRunner().invoke(
            build_cli(), list(args), env={"DIFFSYNTH_CACHE": str(cache)}, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result

    return invoke


@pytest.fixture(scope="module")
def trained(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cli(
        "train", "--model", "qwen-image-controlnet", "--preset", "tiny", "--dataset", str(DATA),
        "--trainable-models", "controlnet", "--max-steps", "3", "--learning-rate", "1e-3",
        "--output", str(out), "--max-pixels", "4096",
    )  # fmt: skip
    return out / "final.safetensors"


def generate(cli: Any, out: Path, *args: str) -> np.ndarray:
    cli("generate", *SIZE, "--output", str(out), *args)
    return np.asarray(Image.open(out)).astype(np.int16)


def tiny_folder(trained: Path) -> Path:
    """The tiny preset the CLI built into the test's cache (a Qwen-Image layout + controlnet/)."""
    return next(trained.parents[1].glob("cache*/tiny/qwen-image-controlnet-*"))


def test_trained_controlnet_follows_the_control_image(cli, trained, tmp_path) -> None:  # noqa: ANN001
    from safetensors.torch import load_file

    keys = load_file(str(trained))
    assert "controlnet_x_embedder.weight" in keys and not any(
        k.startswith(("pipe.", "controlnet.")) for k in keys
    )
    net = ["--model", "qwen-image-controlnet", "--preset", "tiny", "--controlnet", str(trained)]
    a = generate(
        cli, tmp_path / "a.png", *net, "--control-image", str(DATA / "control/canny/image_00.png")
    )
    b = generate(
        cli, tmp_path / "b.png", *net, "--control-image", str(DATA / "control/canny/image_02.png")
    )
    print(
        f"control image A vs B: max {np.abs(a - b).max()}, mean {np.abs(a - b).mean():.2f} grey levels"
    )
    assert np.abs(a - b).mean() > 0.3  # different control images, different pictures
    off = generate(
        cli,
        tmp_path / "off.png",
        *net,
        "--control-image",
        str(DATA / "control/canny/image_00.png"),
        "--controlnet-scale",
        "0",
    )
    # the Qwen-Image family on the same folder (its loader ignores controlnet/)
    plain = generate(
        cli,
        tmp_path / "plain.png",
        "--model",
        "qwen-image",
        "--model-path",
        str(tiny_folder(trained)),
    )
    assert np.array_equal(off, plain)  # scale 0: exactly the plain Qwen-Image picture


def test_export_makes_a_diffusers_controlnet(cli, trained, tmp_path) -> None:  # noqa: ANN001
    import torch
    from diffusers import QwenImageControlNetModel
    from safetensors.torch import load_file

    base = tiny_folder(trained)
    cli(
        "controlnet",
        "export",
        "--checkpoint",
        str(trained),
        "--base-config",
        str(base),
        "--output",
        str(tmp_path / "cn"),
    )
    model = QwenImageControlNetModel.from_pretrained(str(tmp_path / "cn"))
    state = load_file(str(trained))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
