"""LoRA, rsLoRA and DoRA trained through peft, written in the diffusers format: diffusers'
``load_lora_weights`` changes its own pipeline's output exactly as a hand merge of the
in-model weights says (``W + s B A``; DoRA: each row then scaled to its magnitude), with
``s`` = alpha / rank or alpha / sqrt(rank) (rsLoRA) folded into the file."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffsynth_core.lora.inject import lora_state_dict
from diffsynth_core.plugins import get_plugin_manager
from diffsynth_core.training.module import switch_pipe_to_training_mode

PROMPT = "a green star near the bottom"
GEN = dict(height=64, width=64, num_inference_steps=2)
RANK, ALPHA = 4, 8.0
TARGETS = "to_q,to_k,to_v,to_out.0,img_mlp.net.2"
VARIANTS = {
    "lora": {},
    "rslora": {"use_rslora": True},
    "dora": {"use_dora": True},
}


def trained(load: Callable[[], Any], **variant: Any) -> Any:
    """A pipeline with a random (non-zero) adapter of ``variant`` injected into its dit."""
    pipe = load()
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=RANK,
        lora_alpha=ALPHA, **variant,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    for name, param in pipe.dit.named_parameters():
        if "lora_magnitude_vector" in name:  # DoRA: move each row's norm off the base's
            param.data *= 1 + 0.3 * torch.rand(param.shape, generator=generator)
        elif "lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return pipe


def hand_merged(load: Callable[[], Any], pipe: Any) -> Any:
    """A fresh pipeline with each adapted layer's weight computed from the in-model tensors."""
    fresh = load()
    merged = dict(fresh.dit.named_modules())
    count = 0
    for name, layer in pipe.dit.named_modules():
        if not hasattr(layer, "lora_A") or "default" not in layer.lora_A:
            continue
        w = layer.base_layer.weight.detach()
        a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
        s = layer.scaling["default"]
        new = w + s * (b @ a)
        if layer.use_dora["default"]:
            m = layer.lora_magnitude_vector["default"].weight.detach()
            new = new * (m / new.norm(dim=1)).unsqueeze(1)
        merged[name].weight.data.copy_(new)
        count += 1
    assert count == 5 * 2  # 5 targets x 2 blocks
    return fresh


def latents(pipe: Any) -> torch.Tensor:
    return pipe(
        PROMPT, negative_prompt="blurry", cfg_scale=3.0, seed=5, progress=False,
        output_type="latent", **GEN,
    )  # fmt: skip


def diffusers_latents(dpipe: Any) -> torch.Tensor:
    from diffsynth_qwen_image.latents import unpack_latents

    out = dpipe(
        PROMPT, negative_prompt="blurry", true_cfg_scale=3.0, output_type="latent",
        generator=torch.Generator().manual_seed(5), **GEN,
    )  # fmt: skip
    return unpack_latents(out.images, 8, 8)


def export(state: dict[str, torch.Tensor], fmt: str, path: Path) -> Path:
    manager = get_plugin_manager()
    converted = manager.convert_state_dict(state, fmt, manager.get_family("qwen-image"), "lora")
    save_file({k: v.contiguous() for k, v in converted.items()}, str(path))
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_diffusers_loads_the_variant_with_the_hand_merged_effect(
    load_qwen: Callable[[], Any], qwen_tiny: Path, tmp_path: Path, variant: str
) -> None:
    from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

    pipe = trained(load_qwen, **VARIANTS[variant])
    scale = next(m.scaling["default"] for m in pipe.dit.modules() if hasattr(m, "scaling"))
    assert scale == pytest.approx(ALPHA / (math.sqrt(RANK) if variant == "rslora" else RANK))
    path = export(lora_state_dict(pipe.dit), "diffusers", tmp_path / f"{variant}.safetensors")
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert all(k.startswith("transformer.transformer_blocks.") for k in keys)
    assert any("lora_magnitude_vector" in k for k in keys) == (variant == "dora")

    expected = latents(hand_merged(load_qwen, pipe))
    assert (latents(pipe) - expected).abs().max() < 1e-5  # peft in training == the hand merge
    dpipe = DiffusersQwenImagePipeline.from_pretrained(str(qwen_tiny))
    dpipe.set_progress_bar_config(disable=True)
    base = diffusers_latents(dpipe)
    dpipe.load_lora_weights(str(path))
    theirs = diffusers_latents(dpipe)
    assert (theirs - base).abs().max() > 0.05  # the file does something in diffusers
    assert (theirs - expected).abs().max() < 1e-5  # and exactly what the hand merge says


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_our_reader_merges_and_continues_the_variant(
    load_qwen: Callable[[], Any], tmp_path: Path, variant: str
) -> None:
    """``--merge-lora`` / ``diffsynth generate --lora`` (merge_lora) and ``--lora-checkpoint``
    (load_lora_weights) read the file back to the same weights."""
    from diffsynth_core.lora.inject import load_lora_weights, merge_lora, read_lora_file

    pipe = trained(load_qwen, **VARIANTS[variant])
    fmt = "peft" if variant == "dora" else "comfyui"  # (ComfyUI cannot hold peft's DoRA)
    path = export(lora_state_dict(pipe.dit), fmt, tmp_path / "lora.safetensors")
    fresh = load_qwen()
    assert merge_lora(fresh.dit, read_lora_file(path, fresh.dit)) == 10
    want = hand_merged(load_qwen, pipe).dit.state_dict()
    for key, value in fresh.dit.state_dict().items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-6)

    again = load_qwen()
    switch_pipe_to_training_mode(
        again, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=RANK,
        lora_alpha=ALPHA, lora_checkpoint=str(path), **VARIANTS[variant],
    )  # fmt: skip
    theirs = dict(again.dit.named_parameters())
    for name, param in pipe.dit.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(theirs[name], param, rtol=1e-6, atol=1e-7)
    assert load_lora_weights is not None
