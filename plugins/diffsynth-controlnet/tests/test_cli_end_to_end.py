"""End to end through the CLI, as a user types it: train a new ControlNet (``--controlnet-layers``)
and an existing one (``--controlnet DIR``) on the bundled data, export, generate with them;
training with no ControlNet at all stops before its first step."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

DATA = Path(__file__).resolve().parents[3] / "examples" / "qwen_image_controlnet" / "data"
CONTROL_A, CONTROL_B = DATA / "control/canny/image_00.png", DATA / "control/canny/image_02.png"
TRAIN = ["train", "--model", "qwen-image-controlnet", "--preset", "tiny", "--dataset", str(DATA)]
GENERATE = ["generate", "--model", "qwen-image-controlnet", "--preset", "tiny"]
pytestmark = pytest.mark.slow
SIZE = ["--height", "64", "--width", "64", "--steps", "3", "--seed", "1", "--prompt", "a red house"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def cli(cache: Path) -> Any:
    """``cli(*args, ok=True)``: ``diffsynth ...`` in-process with a private tiny-model cache."""
    from diffsynth_core.cli.main import build_cli

    def invoke(*args: str, ok: bool = True) -> Any:
        env = {"DIFFSYNTH_CACHE": str(cache), "DIFFSYNTH_DEBUG": None}
        result = CliRunner().invoke(build_cli(), list(args), env=env, catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result

    return invoke


@pytest.fixture(scope="module")
def new_run(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("new")
    cli(*TRAIN, "--controlnet-layers", "1", "--max-steps", "3", "--output", str(out))
    return out / "final.safetensors"


@pytest.fixture(scope="module")
def dir_run(cli: Any, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dir")
    controlnet = str(tiny_dir / "controlnet")
    cli(*TRAIN, "--controlnet", controlnet, "--max-steps", "3", "--output", str(out))
    return out / "final.safetensors"


def tiny_folder(cache: Path) -> Path:
    """The tiny preset the CLI built into the cache (a Qwen-Image layout + controlnet/)."""
    return next(cache.glob("tiny/qwen-image-controlnet-*"))


def generate(cli: Any, out: Path, *args: str) -> np.ndarray:
    cli(*args, *SIZE, "--output", str(out))
    return np.asarray(Image.open(out)).astype(np.int16)


def load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_new_controlnet_trains_exports_and_generates(cli, cache, new_run, tmp_path) -> None:  # noqa: ANN001
    from diffusers import QwenImageControlNetModel, QwenImageTransformer2DModel

    from diffsynth_controlnet.models import new_controlnet

    trained = load(new_run)
    assert not any(k.startswith(("pipe.", "controlnet.")) for k in trained)  # diffusers' keys
    dit = QwenImageTransformer2DModel.from_pretrained(str(tiny_folder(cache) / "transformer"))
    initial = new_controlnet(dit, 1).state_dict()
    assert trained.keys() == initial.keys()
    changed = {k for k, v in trained.items() if not torch.equal(v, initial[k])}
    # the zero-initialised control embedding and output projection have learnt
    assert {"controlnet_x_embedder.weight", "controlnet_blocks.0.weight"} <= changed
    exported = tmp_path / "cn"
    base = str(tiny_folder(cache))
    cli("controlnet", "export", "--checkpoint", str(new_run), "--base-config", base, "--output", str(exported))  # fmt: skip
    model = QwenImageControlNetModel.from_pretrained(str(exported))
    assert model.config.num_layers == 1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    image = generate(cli, tmp_path / "x.png", *GENERATE, "--controlnet", str(exported), "--control-image", str(CONTROL_A))  # fmt: skip
    assert image.shape == (64, 64, 3)


def test_existing_controlnet_trains_and_steers_generation(
    cli, cache, dir_run, tiny_dir, tmp_path
) -> None:  # noqa: ANN001
    trained = load(dir_run)
    initial = load(tiny_dir / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(v, initial[k]) for k, v in trained.items())
    net = [*GENERATE, "--controlnet", str(dir_run)]  # the checkpoint file, config inferred
    a = generate(cli, tmp_path / "a.png", *net, "--control-image", str(CONTROL_A))
    b = generate(cli, tmp_path / "b.png", *net, "--control-image", str(CONTROL_B))
    print(f"control image A vs B: max {np.abs(a - b).max()}, mean {np.abs(a - b).mean():.2f} grey levels")  # fmt: skip
    assert np.abs(a - b).mean() > 0.3  # different control images, different pictures
    off = generate(cli, tmp_path / "off.png", *net, "--control-image", str(CONTROL_A), "--controlnet-scale", "0")  # fmt: skip
    # the qwen-image family on the same folder (its loader ignores controlnet/)
    plain = generate(cli, tmp_path / "plain.png", "generate", "--model", "qwen-image", "--model-path", str(tiny_folder(cache)))  # fmt: skip
    assert np.array_equal(off, plain)  # scale 0: exactly the plain Qwen-Image picture


@pytest.mark.parametrize(
    ("mode", "prefix"), [("controlnet", "controlnet.transformer_blocks."), ("dit", "transformer.")]
)
def test_lora_training_on_either_model(cli, tiny_dir, tmp_path, mode: str, prefix: str) -> None:  # noqa: ANN001
    controlnet = ["--controlnet", str(tiny_dir / "controlnet")]
    lora = ["--lora-base-model", mode, "--lora-rank", "4", "--max-steps", "1"]
    result = cli(*TRAIN, *controlnet, *lora, "--output", str(tmp_path))
    assert f"LoRA rank 4 on {mode}" in result.output
    keys = load(tmp_path / "final.safetensors")
    assert keys and all(k.startswith(prefix) and ".lora_" in k for k in keys)


@pytest.mark.parametrize("mode", [[], ["--lora-base-model", "dit"]], ids=["full", "dit-lora"])
def test_training_without_a_controlnet_stops_at_start_up(cli, tiny_dir, tmp_path, mode) -> None:  # noqa: ANN001
    qwen = tmp_path / "qwen-image"  # a Qwen-Image copy without controlnet/
    shutil.copytree(tiny_dir, qwen, ignore=shutil.ignore_patterns("controlnet"))
    out = tmp_path / "run"
    args = ["train", "--model", "qwen-image-controlnet", "--model-path", str(qwen), "--dataset", str(DATA)]  # fmt: skip
    result = cli(*args, *mode, "--max-steps", "1", "--output", str(out), ok=False)
    assert "no ControlNet to train" in result.output
    assert "--controlnet DIR" in result.output and "--controlnet-layers N" in result.output
    assert not out.exists()  # stopped before anything ran or was written
