"""End to end on the tiny preset: the seed-style example under ``accelerate launch`` and the
``diffsynth train`` command, each writing a LoRA that diffusers loads with an effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "qwen_image"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_DEBUG": "1", **env}
    done = subprocess.run(args, capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _diffusers_effect(tiny_dir: Path, lora: Path) -> float:
    """Largest change the LoRA makes to diffusers' own output (latents)."""
    from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

    pipe = DiffusersQwenImagePipeline.from_pretrained(str(tiny_dir))
    pipe.set_progress_bar_config(disable=True)
    gen = dict(height=64, width=64, num_inference_steps=2, output_type="latent")
    base = pipe("a red circle", generator=torch.Generator().manual_seed(0), **gen).images
    pipe.load_lora_weights(str(lora))
    tuned = pipe("a red circle", generator=torch.Generator().manual_seed(0), **gen).images
    return (tuned - base).abs().max().item()


def test_seed_example_trains_under_accelerate_launch(tiny_dir: Path, tmp_path: Path) -> None:
    launch = [
        str(BIN / "accelerate"),
        "launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
    ]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    _run(
        [*launch, str(EXAMPLE / "train.py"), str(tiny_dir)],
        QWEN_IMAGE_SIZE="64", QWEN_IMAGE_REPEAT="1", QWEN_IMAGE_OUTPUT=str(tmp_path / "run"),
        QWEN_IMAGE_DTYPE="float32",
    )  # fmt: skip
    lora = load_file(str(tmp_path / "run" / "final.safetensors"))
    assert len(lora) == 6 * 2 * 2 and all(
        k.startswith("transformer.transformer_blocks.") for k in lora
    )
    assert any(v.abs().max() > 0 for k, v in lora.items() if ".lora_B." in k)  # it trained
    assert _diffusers_effect(tiny_dir, tmp_path / "run" / "final.safetensors") > 0


def test_diffsynth_train_writes_a_comfyui_lora_diffusers_loads(
    tiny_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli"
    _run([
        str(BIN / "diffsynth"), "train", "--model", "qwen-image", "--model-path", str(tiny_dir),
        "--dataset", str(EXAMPLE / "data"), "--height", "64", "--width", "64", "--max-steps", "4",
        "--lora-rank", "4", "--learning-rate", "1e-2", "--lora-format", "comfyui", "--output", str(out),
    ])  # fmt: skip
    lora = load_file(str(out / "final.safetensors"))
    assert len(lora) == 12 * 2 * 2 and all(k.startswith("diffusion_model.") for k in lora)
    assert _diffusers_effect(tiny_dir, out / "final.safetensors") > 1e-3
