"""VACE LoRAs in ComfyUI's layout: ``--lora-format comfyui`` writes names ComfyUI's WanModel
has, and kohya / musubi-tuner files (``lora_unet_blocks_0_self_attn_q``) read back.

ComfyUI keeps the original Wan module names (``comfy/ldm/wan/model.py``) and maps a LoRA key to
a parameter as ``diffusion_model.<name>`` (our files), ``<name>`` and ``lora_unet_<name with
dots as underscores>`` (kohya, musubi-tuner). The expected names below are written from that
layout, independently of our exporter, and checked against the tiny model through diffusers'
own Wan -> diffusers converter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffsynth_vace.family import LORA_TARGETS

# our LoRA targets (to_q, to_k, to_v, to_out.0, ffn.net.0.proj, ffn.net.2) in a Wan block
WAN_TARGETS = [f"{attn}.{p}" for attn in ("self_attn", "cross_attn") for p in "qkvo"]
WAN_TARGETS += ["ffn.0", "ffn.2"]
RANK, ALPHA = 4, 8.0


def comfyui_names(tiny_dir: Path) -> set[str]:
    """The Linear layers a LoRA on ``LORA_TARGETS`` touches, by ComfyUI's WanModel names."""
    config = json.loads((tiny_dir / "transformer" / "config.json").read_text())
    blocks = [f"blocks.{i}" for i in range(config["num_layers"])]
    blocks += [f"vace_blocks.{i}" for i in range(len(config["vace_layers"]))]
    return {f"{block}.{target}" for block in blocks for target in WAN_TARGETS}


def to_diffusers(tiny_dir: Path, names: set[str]) -> dict[str, str]:
    """Wan name -> diffusers module name, by diffusers' converter (not ours)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    out = {}
    for name in names:
        (key,) = convert_wan_transformer_to_diffusers({f"{name}.weight": torch.zeros(1)})
        out[name] = key.removesuffix(".weight")
    return out


def _trained(pipe: Any) -> None:
    from diffsynth_core.training.module import switch_pipe_to_training_mode

    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=RANK,
        lora_alpha=ALPHA,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in pipe.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def _export(pipe: Any, folder: Path, fmt: str) -> Path:
    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.module import PipelineTrainingModule

    module = PipelineTrainingModule(pipe, lambda *a, **k: None)
    return ModelLogger(folder, "pipe.dit.", export_format=fmt, family=pipe.family).write(
        module, module.state_dict(), "final", 1, 0
    )


def _merged(tiny_dir: Path, path: Path) -> dict[str, torch.Tensor]:
    from diffsynth_core.pipeline import load_pipeline

    fresh = load_pipeline("wan-vace", model_path=str(tiny_dir))
    assert fresh.load_lora(str(path)) == len(comfyui_names(tiny_dir))
    return fresh.dit.state_dict()


def test_comfyui_format_uses_comfyuis_wan_names(pipe: Any, tiny_dir: Path, tmp_path: Path) -> None:
    expected = comfyui_names(tiny_dir)
    # the names are real: diffusers' converter takes each to a weight of the tiny model
    diffusers_names = to_diffusers(tiny_dir, expected)
    assert {f"{n}.weight" for n in diffusers_names.values()} <= set(pipe.dit.state_dict())
    _trained(pipe)
    keys = set(load_file(_export(pipe, tmp_path, "comfyui")))
    assert keys == {f"diffusion_model.{n}.lora_{ab}.weight" for n in expected for ab in "AB"}


def test_musubi_and_comfyui_files_merge_as_the_diffusers_one(
    pipe: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    _trained(pipe)
    diffusers_path = _export(pipe, tmp_path / "diffusers", "diffusers")
    comfyui_path = _export(pipe, tmp_path / "comfyui", "comfyui")
    # musubi-tuner's form of the same LoRA: underscore names, lora_down/up, alpha 2 per module
    state = load_file(diffusers_path)
    musubi = {}
    for wan, ours in to_diffusers(tiny_dir, comfyui_names(tiny_dir)).items():
        flat = "lora_unet_" + wan.replace(".", "_")
        musubi[f"{flat}.lora_down.weight"] = state[f"transformer.{ours}.lora_A.weight"]
        musubi[f"{flat}.lora_up.weight"] = state[f"transformer.{ours}.lora_B.weight"] * (RANK / 2)
        musubi[f"{flat}.alpha"] = torch.tensor(2.0)
    musubi_path = tmp_path / "musubi.safetensors"
    save_file(musubi, str(musubi_path))

    from diffsynth_core.pipeline import load_pipeline

    reference = _merged(tiny_dir, diffusers_path)
    base = load_pipeline("wan-vace", model_path=str(tiny_dir)).dit.state_dict()
    changed = [k for k, v in reference.items() if k in base and not torch.equal(v, base[k])]
    assert len(changed) == len(comfyui_names(tiny_dir))
    for path in (comfyui_path, musubi_path):
        merged = _merged(tiny_dir, path)
        for key in reference:
            torch.testing.assert_close(merged[key], reference[key], rtol=0, atol=1e-6)
