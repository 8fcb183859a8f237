"""LoRA files we write load in diffusers with the same effect as in our pipeline; our reader
accepts the DiffSynth-Studio, diffusers, ComfyUI and kohya key forms."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from diffsynth_core.lora.inject import lora_state_dict, merge_lora, read_lora_file
from diffsynth_core.plugins import get_plugin_manager
from diffsynth_core.training.module import switch_pipe_to_training_mode
from diffsynth_qwen_image.family import LORA_TARGETS
from diffsynth_qwen_image.pipeline import QwenImagePipeline

PipeFactory = Callable[[], QwenImagePipeline]
Trained = tuple[QwenImagePipeline, dict[str, torch.Tensor]]

PROMPT = "a green star near the bottom"
GEN = dict(height=64, width=64, num_inference_steps=3)
RANK, ALPHA = 4, 8.0  # alpha != rank, so the export must fold alpha / rank into lora_B


def _randomise_lora(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1


def _latents(pipe: QwenImagePipeline) -> torch.Tensor:
    return pipe(
        PROMPT,
        negative_prompt="blurry",
        cfg_scale=3.0,
        seed=5,
        progress=False,
        output_type="latent",
        **GEN,
    )


def _diffusers_latents(dpipe: Any) -> torch.Tensor:
    from diffsynth_qwen_image.latents import unpack_latents

    out = dpipe(
        PROMPT, negative_prompt="blurry", true_cfg_scale=3.0, output_type="latent",
        generator=torch.Generator().manual_seed(5), **GEN,
    ).images  # fmt: skip
    return unpack_latents(out, 8, 8)


@pytest.fixture(scope="module")
def trained(fresh_pipe: PipeFactory) -> Trained:
    """A pipeline with a non-zero LoRA injected as training leaves it, and its bare weights."""
    pipe = fresh_pipe()
    switch_pipe_to_training_mode(
        pipe,
        lora_base_model="dit",
        lora_target_modules=LORA_TARGETS,
        lora_rank=RANK,
        lora_alpha=ALPHA,
    )
    _randomise_lora(pipe.dit)
    return pipe, lora_state_dict(pipe.dit)


def _export(state: dict[str, torch.Tensor], fmt: str, path: Path) -> Path:
    manager = get_plugin_manager()
    converted = manager.convert_state_dict(state, fmt, manager.get_family("qwen-image"), "lora")
    save_file({k: v.contiguous() for k, v in converted.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("fmt", "prefix"), [("diffusers", "transformer."), ("comfyui", "diffusion_model.")]
)
def test_exported_lora_changes_diffusers_output_as_ours(
    trained: Trained, fresh_pipe: PipeFactory, tiny_dir: Path, tmp_path: Path, fmt: str, prefix: str
) -> None:
    from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

    pipe, state = trained
    path = _export(state, fmt, tmp_path / f"lora-{fmt}.safetensors")
    assert all(k.startswith(prefix) for k in read_raw_keys(path))
    with_lora_ours = _latents(pipe)
    dpipe = DiffusersQwenImagePipeline.from_pretrained(str(tiny_dir))
    dpipe.set_progress_bar_config(disable=True)
    base = _diffusers_latents(dpipe)
    dpipe.load_lora_weights(str(path))
    with_lora_diffusers = _diffusers_latents(dpipe)
    merged = fresh_pipe()
    assert merged.load_lora(path) == len(state) // 2
    with_lora_merged = _latents(merged)
    assert (with_lora_diffusers - base).abs().max() > 0.05  # the LoRA does something
    assert (with_lora_diffusers - with_lora_ours).abs().max() < 1e-5  # measured 2.4e-7
    assert (with_lora_merged - with_lora_ours).abs().max() < 1e-5  # measured 1.2e-6


def read_raw_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _forms(state: dict[str, torch.Tensor], alpha: float) -> dict[str, dict[str, torch.Tensor]]:
    """The same LoRA in four tools' key forms (ComfyUI / kohya carry ``alpha``)."""
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    rank = state[f"{modules[0]}.lora_A.weight"].shape[0]
    studio, diffusers_form, comfy, kohya = {}, {}, {}, {}
    for m in modules:
        a, b = state[f"{m}.lora_A.weight"], state[f"{m}.lora_B.weight"]
        up = b * (rank / alpha)  # these forms scale up by alpha / rank when loading
        studio |= {f"{m}.lora_A.default.weight": a, f"{m}.lora_B.default.weight": b}
        diffusers_form |= {f"transformer.{m}.lora_A.weight": a, f"transformer.{m}.lora_B.weight": b}
        comfy |= {
            f"diffusion_model.{m}.lora_down.weight": a,
            f"diffusion_model.{m}.lora_up.weight": up,
            f"diffusion_model.{m}.alpha": torch.tensor(alpha),
        }
        flat = "lora_unet_" + m.replace(".", "_")
        kohya |= {
            f"{flat}.lora_down.weight": a,
            f"{flat}.lora_up.weight": up,
            f"{flat}.alpha": torch.tensor(alpha),
        }
    return {"studio": studio, "diffusers": diffusers_form, "comfyui": comfy, "kohya": kohya}


def test_reader_gives_identical_merges_for_every_key_form(
    trained: Trained, tiny_pipe: QwenImagePipeline, tmp_path: Path
) -> None:
    _, state = trained
    merged = {}
    for name, form in _forms(state, alpha=3.0).items():
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in form.items()}, str(path))
        dit = copy.deepcopy(tiny_pipe.dit)
        assert merge_lora(dit, read_lora_file(path, dit)) == 24  # 12 targets x 2 blocks
        merged[name] = dit.state_dict()
    base = tiny_pipe.dit.state_dict()
    changed = [k for k in base if not torch.equal(base[k], merged["studio"][k])]
    assert len(changed) == 24
    for name in ("diffusers", "comfyui", "kohya"):
        for key in changed:
            torch.testing.assert_close(merged[name][key], merged["studio"][key], rtol=0, atol=1e-6)
