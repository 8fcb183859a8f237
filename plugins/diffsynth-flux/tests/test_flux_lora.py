"""LoRA files in ComfyUI's Flux layout: the names ComfyUI knows, the same update once ComfyUI
applies them, and an exact read-back; our reader also takes diffusers' and kohya's forms."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from comfyui_reference import apply_diffusers_lora, apply_lora, flux_key_map, from_native, to_native
from safetensors.torch import save_file

from diffsynth_core.lora.inject import lora_state_dict, merge_lora, read_lora_file
from diffsynth_core.plugins import get_plugin_manager
from diffsynth_core.training.module import switch_pipe_to_training_mode
from diffsynth_flux.comfyui import comfy_name, from_comfyui_lora, to_comfyui_lora
from diffsynth_flux.family import LORA_TARGETS

ALL_LINEAR = (
    LORA_TARGETS
    + ",norm1.linear,norm1_context.linear,norm.linear,x_embedder,context_embedder,norm_out.linear,linear_1,linear_2"
)


def _key_map(dit: torch.nn.Module) -> dict[str, Any]:
    c = dit.config
    return flux_key_map(
        c.num_layers, c.num_single_layers, c.num_attention_heads * c.attention_head_dim
    )


def _lora(pipe: Any, targets: str, rank: int = 4, alpha: float = 8.0) -> dict[str, torch.Tensor]:
    """A random LoRA on ``targets`` (alpha != rank, so folding is exercised); bare keys."""
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=targets, lora_rank=rank, lora_alpha=alpha
    )
    generator = torch.Generator().manual_seed(0)
    for name, param in pipe.dit.named_parameters():
        if "lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return lora_state_dict(pipe.dit)


@pytest.fixture(scope="module")
def base_weights(fresh_pipe: Callable[..., Any]) -> tuple[Any, dict[str, torch.Tensor]]:
    pipe = fresh_pipe()
    return pipe, {k: v.clone() for k, v in pipe.dit.state_dict().items()}


def test_every_linear_layer_has_its_comfyui_name(base_weights: tuple[Any, Any]) -> None:
    pipe, _ = base_weights
    key_map = _key_map(pipe.dit)
    linear = [n for n, m in pipe.dit.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) > 30
    for name in linear:
        native, part = comfy_name(name)  # type: ignore[misc]
        dst, offset, _ = key_map[f"{name}.weight"]
        assert dst == f"diffusion_model.{native}.weight", name
        assert (part is None) == (not isinstance(offset, int)), name


@pytest.mark.parametrize(
    "targets", [ALL_LINEAR, "to_q,to_v,proj_mlp", "to_k,add_v_proj,norm_out.linear"]
)
def test_comfyui_file_patches_as_a_hand_merge(fresh_pipe: Callable[..., Any], targets: str) -> None:
    pipe = fresh_pipe()
    base = {k: v.clone() for k, v in pipe.dit.state_dict().items() if k.endswith(".weight")}
    bare = _lora(pipe, targets)
    family = get_plugin_manager().get_family("flux-dev")
    comfy = get_plugin_manager().convert_state_dict(bare, "comfyui", family, "lora")
    key_map = _key_map(pipe.dit)
    native_keys = {dst[: -len(".weight")] for dst, _, _ in key_map.values()}
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in comfy}
    assert modules <= native_keys and all(k.startswith("diffusion_model.") for k in comfy)
    if targets == "to_q,to_v,proj_mlp":  # three diffusers slices -> one fused LoRA per layer
        assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight" in comfy
        assert "diffusion_model.single_blocks.0.linear1.lora_down.weight" in comfy
        assert len(modules) == 2 + 1  # two double blocks, one single block
    merged = _hand_merge(base, bare)
    changed = [k for k in merged if not torch.equal(merged[k], base[k])]
    # what ComfyUI does with the file, against merging the bare LoRA into diffusers' weights
    native = to_native(base, key_map)
    assert apply_lora(native, comfy) == []
    assert _gap(from_native(native, key_map), merged, changed) < 1e-6
    # ComfyUI maps diffusers' names for Flux too: the default format lands the same way
    diffusers_file = get_plugin_manager().convert_state_dict(bare, "diffusers", family, "lora")
    native = to_native(base, key_map)
    assert apply_diffusers_lora(native, diffusers_file, key_map) == []
    assert _gap(from_native(native, key_map), merged, changed) < 1e-6


def _hand_merge(
    base: dict[str, torch.Tensor], bare: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    merged = copy.deepcopy(base)
    for key, a in bare.items():
        if ".lora_A." in key:
            module = key.rsplit(".lora_A.", 1)[0]
            merged[f"{module}.weight"] = (
                merged[f"{module}.weight"] + bare[f"{module}.lora_B.weight"] @ a
            )
    return merged


def _gap(
    result: dict[str, torch.Tensor], merged: dict[str, torch.Tensor], changed: list[str]
) -> float:
    assert changed and all(k in result for k in changed)
    return max((result[k] - merged[k]).abs().max().item() for k in changed)


def test_comfyui_file_reads_back_exactly(fresh_pipe: Callable[..., Any]) -> None:
    pipe = fresh_pipe()
    bare = _lora(pipe, ALL_LINEAR)
    back = from_comfyui_lora(to_comfyui_lora(bare))
    assert back is not None and back.keys() == bare.keys()
    assert all(torch.allclose(back[k], bare[k], atol=1e-7) for k in bare)
    assert (
        from_comfyui_lora(
            {"transformer.x_embedder.lora_A.weight": bare["x_embedder.lora_A.weight"]}
        )
        is None
    )


def test_a_foreign_fused_lora_merges_the_same(
    fresh_pipe: Callable[..., Any], tmp_path: Any
) -> None:
    """A LoRA trained on ComfyUI's fused qkv (``up`` not block-diagonal) still merges exactly."""
    pipe = fresh_pipe()
    hidden = pipe.dit.config.num_attention_heads * pipe.dit.config.attention_head_dim
    g = torch.Generator().manual_seed(1)
    down, up = torch.randn(6, hidden, generator=g), torch.randn(3 * hidden, 6, generator=g)
    name = "diffusion_model.double_blocks.1.img_attn.qkv"
    path = tmp_path / "fused.safetensors"
    save_file(
        {
            f"{name}.lora_down.weight": down,
            f"{name}.lora_up.weight": up,
            f"{name}.alpha": torch.tensor(3.0),
        },
        str(path),
    )
    before = pipe.dit.transformer_blocks[1].attn.to_k.weight.detach().clone()
    assert pipe.load_lora(path) == 3
    after = pipe.dit.transformer_blocks[1].attn.to_k.weight
    assert torch.allclose(after - before, 0.5 * up[hidden : 2 * hidden] @ down, atol=1e-5)


@pytest.fixture(scope="module")
def trained_lora(fresh_pipe: Callable[..., Any]) -> dict[str, torch.Tensor]:
    return _lora(fresh_pipe(), "to_q,to_k,to_v,add_q_proj,proj_mlp,proj_out,norm_out.linear")


@pytest.mark.parametrize("form", ["comfyui", "diffusers", "kohya", "kohya-native"])
def test_pipeline_reads_each_form(
    fresh_pipe: Callable[..., Any], trained_lora: dict[str, torch.Tensor], tmp_path: Any, form: str
) -> None:
    bare = trained_lora
    family = get_plugin_manager().get_family("flux-dev")
    if form == "kohya":
        file = {}
        for k, v in bare.items():
            module, _, kind = k.rpartition(".lora_")
            up_down = "lora_down" if kind.startswith("A") else "lora_up"
            file[f"lora_unet_{module.replace('.', '_')}.{up_down}.weight"] = v
    elif form == "kohya-native":  # sd-scripts' Flux files: ComfyUI's names, kohya's spelling
        comfy = get_plugin_manager().convert_state_dict(bare, "comfyui", family, "lora")
        file = {}
        for k, v in comfy.items():
            body = k[len("diffusion_model.") :]
            split = body.rindex(".alpha") if body.endswith(".alpha") else body.index(".lora_")
            file[f"lora_unet_{body[:split].replace('.', '_')}{body[split:]}"] = v
        assert "lora_unet_final_layer_adaLN_modulation_1.lora_up.weight" in file
    else:
        file = get_plugin_manager().convert_state_dict(bare, form, family, "lora")
    path = tmp_path / f"{form}.safetensors"
    save_file({k: v.contiguous() for k, v in file.items()}, str(path))
    target = fresh_pipe()
    back = read_lora_file(path, target.dit, family=family)
    assert back.keys() == bare.keys()
    assert all(torch.allclose(back[k], bare[k], atol=1e-6) for k in bare)
    reference = copy.deepcopy(target.dit)
    merge_lora(reference, bare)
    before = {k: v.clone() for k, v in target.dit.state_dict().items()}
    assert target.load_lora(path) == len(bare) // 2
    for key, value in target.dit.state_dict().items():
        assert torch.allclose(value, reference.state_dict()[key], atol=1e-6), key
    assert any(not torch.equal(v, before[k]) for k, v in target.dit.state_dict().items())


def test_incomplete_comfyui_file_is_a_clear_error() -> None:
    from diffsynth_core.errors import ModelFileError

    name = "diffusion_model.double_blocks.0.img_attn.qkv"
    with pytest.raises(ModelFileError, match="lacks its down or up"):
        from_comfyui_lora({f"{name}.lora_up.weight": torch.zeros(96, 4)})
    with pytest.raises(ModelFileError, match="only plain LoRA"):
        from_comfyui_lora({f"{name}.lora_mid.weight": torch.zeros(4, 4)})
