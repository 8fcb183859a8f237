"""End to end: ``diffsynth train --model qwen-image-edit-plus --preset tiny`` on the bundled
edit data, whose LoRA changes diffusers' QwenImageEditPlusPipeline exactly as a hand merge of
the file says (diffusers and ComfyUI layouts), and ``diffsynth generate --edit-image``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffsynth_qwen_image.edit_tiny import load_edit_pipeline as load_edit

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "examples" / "qwen_image_edit" / "data"
BIN = Path(sys.executable).parent
SMALL = ["--edit-image-pixels", "4096", "--edit-vl-pixels", "4096"]
PROMPT = "give the circle in picture 1 the colour of picture 2"

pytestmark = pytest.mark.slow


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_CACHE": str(cache)}
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the run's output folder, the tiny preset it built): 4 LoRA steps on two-image rows,
    sample images from a prompts file whose lines carry their edit images."""
    tmp = tmp_path_factory.mktemp("edit-e2e")
    prompts = tmp / "prompts.txt"
    line = {"prompt": PROMPT, "edit_image": [str(DATA / "edit_00.png"), str(DATA / "swatch_00.png")],
            "edit_image_pixels": 4096, "edit_vl_pixels": 4096}  # fmt: skip
    prompts.write_text(json.dumps(line) + "\n")
    _run([
        str(BIN / "diffsynth"), "train", "--model", "qwen-image-edit-plus", "--preset", "tiny",
        "--dataset", str(DATA), "--metadata", str(DATA / "metadata_two_images.csv"),
        "--height", "64", "--width", "64", "--max-steps", "4", "--lora-rank", "4",
        "--learning-rate", "1e-2", "--sample-prompts", str(prompts), "--sample-steps", "2",
        "--output", str(tmp / "run"), *SMALL,
    ], tmp / "cache")  # fmt: skip
    (preset,) = (tmp / "cache" / "tiny").glob("qwen-image-edit-plus-*")
    return tmp / "run", preset


def _diffusers(preset: Path, processor: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus
    from diffusers import QwenImageEditPlusPipeline

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 4096)
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", 4096)
    pipe = QwenImageEditPlusPipeline.from_pretrained(str(preset), processor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(dpipe: Any) -> torch.Tensor:
    images = [Image.open(DATA / n).convert("RGB") for n in ("edit_00.png", "swatch_00.png")]
    return dpipe(
        image=images, prompt=PROMPT, height=64, width=64, num_inference_steps=2,
        true_cfg_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="latent",
    ).images  # fmt: skip


def _hand_merged(dpipe: Any, lora: dict[str, torch.Tensor], prefix: str) -> None:
    """W += B @ A for every pair in the file (the export folded alpha / rank into B)."""
    for key, a in lora.items():
        if key.endswith(".lora_A.weight"):
            module = key[len(prefix) : -len(".lora_A.weight")]
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            weight = dpipe.transformer.get_submodule(module).weight
            weight.data += (b.float() @ a.float()).to(weight.dtype)


def test_the_lora_changes_diffusers_as_its_hand_merge_says(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run, preset = trained
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step-000000-0.png",
        "step-000004-0.png",
    ]  # sampled with the prompts file's edit images (an edit pipeline needs one)
    lora = load_file(str(run / "final.safetensors"))
    assert lora and all(k.startswith("transformer.transformer_blocks.") for k in lora)
    comfy = {"diffusion_model." + k[len("transformer.") :]: v for k, v in lora.items()}
    save_file(comfy, str(tmp_path / "comfy.safetensors"))
    processor = load_edit(preset, plus=True).processor
    dpipe = _diffusers(preset, processor, monkeypatch)
    original = {k: v.clone() for k, v in dpipe.transformer.state_dict().items()}
    base = _latents(dpipe)
    for path, prefix in ((run / "final.safetensors", "transformer."),
                         (tmp_path / "comfy.safetensors", "diffusion_model.")):  # fmt: skip
        dpipe.load_lora_weights(str(path))
        with_lora = _latents(dpipe)
        dpipe.unload_lora_weights()
        _hand_merged(dpipe, load_file(str(path)), prefix)
        by_hand = _latents(dpipe)
        dpipe.transformer.load_state_dict(original)
        assert (with_lora - base).abs().max() > 1e-4  # the LoRA does something
        assert (with_lora - by_hand).abs().max() < 1e-5
    assert torch.equal(_latents(dpipe), base)  # (the pipeline was restored between files)
    # and our pipeline, merging the file with its own reader, gives diffusers' LoRA output
    from diffsynth_qwen_image.latents import pack_latents

    dpipe.load_lora_weights(str(run / "final.safetensors"))
    ours = load_edit(preset, plus=True)
    ours.load_lora(run / "final.safetensors")
    images = [Image.open(DATA / n).convert("RGB") for n in ("edit_00.png", "swatch_00.png")]
    mine = ours(
        PROMPT, edit_image=images, height=64, width=64, num_inference_steps=2, cfg_scale=1.0,
        seed=0, progress=False, output_type="latent", edit_image_pixels=4096, edit_vl_pixels=4096,
    )  # fmt: skip
    assert (pack_latents(mine) - _latents(dpipe)).abs().max() < 1e-5


def test_generate_takes_repeated_edit_images(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """In this process (click's runner: no second start-up), the output equals our pipeline's
    with both images in order and the LoRA merged."""
    from click.testing import CliRunner

    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager

    run, preset = trained
    out = tmp_path / "out.png"
    manager = build_plugin_manager()
    reset_plugin_manager(manager)
    try:
        result = CliRunner().invoke(build_cli(manager), [
            "generate", "--model", "qwen-image-edit-plus", "--model-path", str(preset),
            "--prompt", PROMPT, "--edit-image", str(DATA / "edit_00.png"),
            "--edit-image", str(DATA / "swatch_00.png"), "--height", "64", "--width", "64",
            "--steps", "2", "--lora", str(run / "final.safetensors"), "--output", str(out), *SMALL,
        ])  # fmt: skip
    finally:
        reset_plugin_manager(None)
    assert result.exit_code == 0, result.output
    pipe = load_edit(preset, plus=True)
    pipe.load_lora(run / "final.safetensors")
    images = [Image.open(DATA / n).convert("RGB") for n in ("edit_00.png", "swatch_00.png")]
    expected = pipe(
        PROMPT, edit_image=images, height=64, width=64, num_inference_steps=2, seed=0,
        progress=False, edit_image_pixels=4096, edit_vl_pixels=4096,
    )  # fmt: skip
    written = Image.open(out)
    assert written.size == (64, 64)
    assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(expected))


def test_our_reader_takes_the_peers_key_forms(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """DiffSynth-Studio's bare ``lora_A.default`` keys and kohya's ``lora_unet_..`` keys with
    ``.alpha`` merge into the edit DiT exactly as the diffusers file does."""
    run, preset = trained
    lora = load_file(str(run / "final.safetensors"))
    bare = {k[len("transformer.") :]: v for k, v in lora.items()}
    studio = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
              for k, v in bare.items()}  # fmt: skip
    kohya: dict[str, torch.Tensor] = {}
    for key, value in bare.items():
        module, part = key.rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if part.startswith('A') else 'up'}.weight"] = value
        rank = value.shape[0] if part.startswith("A") else value.shape[1]
        kohya[f"{name}.alpha"] = torch.tensor(float(rank))  # alpha = rank: B already scaled
    reference = load_edit(preset, plus=True)
    reference.load_lora(run / "final.safetensors")
    expected = reference.dit.state_dict()
    for name, state in (("studio", studio), ("kohya", kohya)):
        save_file(state, str(tmp_path / f"{name}.safetensors"))
        pipe = load_edit(preset, plus=True)
        assert pipe.load_lora(tmp_path / f"{name}.safetensors") == len(bare) // 2
        for key, value in pipe.dit.state_dict().items():
            assert torch.allclose(value, expected[key], atol=1e-6), (name, key)
