"""``--transformer FILE`` (and ``--vae``, ``--text-encoder``): one checkpoint file in place of a
component's folder, through diffusers' single-file loading, in diffusers' / the original keys,
ComfyUI's packaging and fp8."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from diffsynth_core.cli.main import build_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("diffsynth_qwen_image") is None, reason="the qwen-image plugin"
)
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Qwen-Image's tiny model (a cache of this module's own) and single files made from it."""
    from diffsynth_core.cli.run import presets
    from diffsynth_core.plugins import get_plugin_manager, reset_plugin_manager

    root = tmp_path_factory.mktemp("single-file")
    before = {k: os.environ.get(k) for k in ("DIFFSYNTH_CACHE", "DIFFSYNTH_LOAD_PLUGINS")}
    os.environ["DIFFSYNTH_CACHE"] = str(root / "cache")
    os.environ.pop("DIFFSYNTH_LOAD_PLUGINS", None)  # the installed plugins
    reset_plugin_manager(None)
    presets.tiny_folder(get_plugin_manager().get_family("qwen-image"))
    yield root
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_plugin_manager(None)


def _folder(root: Path) -> Path:
    return next((root / "cache" / "tiny").glob("qwen-image-*"))


def _weights(root: Path, component: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(_folder(root) / component / "diffusion_pytorch_model.safetensors"))


def _write(root: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path = root / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _module(root: Path, **files: str) -> Any:
    from accelerate import Accelerator

    from diffsynth_core.cli.run import build
    from diffsynth_core.testing import make_image_dataset

    data = make_image_dataset(root / "data", 1, 32) if not (root / "data").exists() else root / "data"
    given = {"model": "qwen-image", "preset": "tiny", "dataset": str(data), "height": 32,
             "width": 32, "seed": 3, **files}  # fmt: skip
    run = build.prepare(given, None, [])
    torch.manual_seed(3)  # the LoRA initialisation
    module, where = build.build_module(run, Accelerator(cpu=True))
    return module, build.build_dataset(run.config, run.family)[0], where


def _loss(module: Any, sample: dict[str, Any]) -> float:
    torch.manual_seed(11)  # the same timestep and noise
    with torch.no_grad():
        return float(module(sample))


def _dit(module: Any) -> dict[str, torch.Tensor]:
    """The transformer's weights under the file's names (LoRA layers' base weights as theirs)."""
    state = module.pipe.dit.state_dict()
    return {k.replace(".base_layer.", "."): v.detach().clone() for k, v in state.items() if "lora_" not in k}


@pytest.mark.slow
def test_a_single_file_trains_as_the_folder_in_every_packaging(tiny: Path) -> None:
    folder_module, sample, _ = _module(tiny)
    reference_loss, reference = _loss(folder_module, sample), _dit(folder_module)
    weights = _weights(tiny, "transformer")
    # Qwen-Image's original single-file keys are diffusers' (diffusers maps them 1:1)
    plain = _write(tiny, "qwen_image.safetensors", weights)
    comfy = _write(tiny, "qwen_image_comfy.safetensors", {f"model.diffusion_model.{k}": v for k, v in weights.items()})
    for file in (plain, comfy):
        module, sample, where = _module(tiny, transformer=str(file))
        assert f"transformer {file}" in where
        loaded = _dit(module)
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), file.name
        assert _loss(module, sample) == reference_loss


@pytest.mark.slow
def test_fp8_and_scaled_fp8_files_load_as_their_float_weights(tiny: Path) -> None:
    weights = _weights(tiny, "transformer")
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in weights.items()}
    scaled: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    for key, value in weights.items():
        if value.ndim == 2:  # ComfyUI's scaled fp8: weight / scale in fp8, and the scale
            scale = value.abs().max().clamp(min=1e-8) / 448
            scaled[key] = (value / scale).to(torch.float8_e4m3fn)
            scaled[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
        else:
            scaled[key] = value
    expected_fp8 = {k: v.float() for k, v in fp8.items()}
    module, _, _ = _module(tiny, transformer=str(_write(tiny, "fp8.safetensors", fp8)))
    loaded = _dit(module)
    assert all(torch.equal(loaded[k], expected_fp8[k]) for k in weights)
    assert {v.dtype for v in loaded.values()} == {torch.float32}
    module, _, _ = _module(tiny, transformer=str(_write(tiny, "scaled.safetensors", scaled)))
    loaded = _dit(module)
    key = next(k for k, v in weights.items() if v.ndim == 2)
    dequantized = scaled[key].float() * scaled[key.removesuffix(".weight") + ".scale_weight"]
    assert torch.equal(loaded[key], dequantized)
    assert (loaded[key] - weights[key]).abs().max() < 0.07 * weights[key].abs().max()
    assert not any(k.endswith("scale_weight") for k in loaded)


def _train(tiny: Path, *flags: str) -> Any:
    from diffsynth_core.testing import make_image_dataset

    data = make_image_dataset(tiny / "cli-data", 1, 32) if not (tiny / "cli-data").exists() else tiny / "cli-data"
    args = ["train", "--model", "qwen-image", "--preset", "tiny", "--dataset", str(data), "--height",
            "32", "--width", "32", "--max-steps", "1", "--output", str(tiny / "out"), *flags]  # fmt: skip
    return CliRunner().invoke(build_cli(), args)


def _one_error(done: Any) -> str:
    lines = done.output.strip().splitlines()
    assert done.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.output
    assert "Traceback" not in done.output
    return lines[0]


@pytest.mark.slow
def test_a_file_of_another_model_is_one_error_naming_the_layout(tiny: Path) -> None:
    vae = _write(tiny, "vae_as_dit.safetensors", _weights(tiny, "vae"))
    line = _one_error(_train(tiny, "--transformer", str(vae)))
    assert f"{vae} is not a QwenImageTransformer2DModel checkpoint" in line
    assert "diffusers' keys or the original model's" in line
    assert not (tiny / "out").exists()


def test_a_component_without_single_file_loading_says_so(tiny: Path) -> None:
    te = _write(tiny, "te.safetensors", {"w": torch.zeros(2)})
    line = _one_error(_train(tiny, "--text-encoder", str(te)))
    assert "Qwen2_5_VLForConditionalGeneration cannot be loaded from a single file" in line
    assert "give this component in the repository layout" in line
    line = _one_error(_train(tiny, "--vae", str(tiny)))
    assert "is a folder: give one checkpoint file" in line


def test_musubi_tuners_single_file_keys_convert_to_ours(tmp_path: Path) -> None:
    peer = tmp_path / "musubi.toml"
    peer.write_text('dit = "/m/qwen_image_bf16.safetensors"\nvae = "/m/vae.safetensors"\n', encoding="utf-8")
    done = CliRunner().invoke(build_cli(), ["convert-config", str(peer)])
    assert done.exit_code == 0, done.output
    assert 'transformer = "/m/qwen_image_bf16.safetensors"' in done.output.splitlines()
    assert 'vae = "/m/vae.safetensors"' in done.output.splitlines()


@pytest.mark.slow
def test_generate_takes_the_transformer_from_one_file(tiny: Path) -> None:
    """`diffsynth generate --transformer FILE`: the file's DiT makes the image (the folder's
    weights in a file give the folder's image; other weights another one)."""
    import numpy as np
    from PIL import Image

    weights = _weights(tiny, "transformer")
    same = _write(tiny, "gen_same.safetensors", weights)
    other = _write(tiny, "gen_other.safetensors", {k: v * 1.5 if v.dim() == 2 else v for k, v in weights.items()})

    def image(*flags: str) -> np.ndarray:
        out = tiny / f"gen-{len(list(tiny.glob('gen-*.png')))}.png"
        args = ["generate", "--model", "qwen-image", "--preset", "tiny", "--prompt", "a cat",
                "--height", "32", "--width", "32", "--steps", "2", "--output", str(out), *flags]  # fmt: skip
        done = CliRunner().invoke(build_cli(), args)
        assert done.exit_code == 0, done.output
        return np.asarray(Image.open(out), dtype=np.int16)

    folder = image()
    assert np.array_equal(image("--transformer", str(same)), folder)
    assert np.abs(image("--transformer", str(other)) - folder).max() > 8
