"""LoKr and LoHa trained through peft are written in ComfyUI's key layout (LyCORIS names under
``diffusion_model.``, one ``alpha`` per module); ComfyUI's reconstruction of each module's
update from the file (``comfy/weight_adapter/lokr.py`` / ``loha.py``, written out again here)
equals peft's own delta, and our reader merges and continues from the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from diffsynth_core.lora.inject import lora_state_dict, merge_lora, read_lora_file
from diffsynth_core.training.module import switch_pipe_to_training_mode

from .test_diffusers_variants import export

TARGETS = "to_q,to_k,img_mlp.net.2"
# rank 2: LoKr splits its second factor (lokr_w2_a @ lokr_w2_b, ComfyUI divides alpha by the
# rank); rank 8: both factors are full matrices (ComfyUI ignores alpha)
CASES = {"lokr-r2": ("lokr", 2), "lokr-r8": ("lokr", 8), "loha-r4": ("loha", 4)}
ALPHA = 3.0


def comfy_delta(file: dict[str, torch.Tensor], module: str, shape: torch.Size) -> torch.Tensor:
    """ComfyUI's ``calculate_weight`` at strength 1, for one module of a file."""
    get = {k[len(module) + 1 :]: v for k, v in file.items() if k.startswith(module + ".")}
    alpha = float(get["alpha"]) if "alpha" in get else None
    if "hada_w1_a" in get:
        scale = alpha / get["hada_w1_b"].shape[0] if alpha is not None else 1.0
        diff = (get["hada_w1_a"] @ get["hada_w1_b"]) * (get["hada_w2_a"] @ get["hada_w2_b"])
        return diff.reshape(shape) * scale
    dim = None
    if "lokr_w1" in get:
        w1 = get["lokr_w1"]
    else:
        dim, w1 = get["lokr_w1_b"].shape[0], get["lokr_w1_a"] @ get["lokr_w1_b"]
    if "lokr_w2" in get:
        w2 = get["lokr_w2"]
    else:
        dim, w2 = get["lokr_w2_b"].shape[0], get["lokr_w2_a"] @ get["lokr_w2_b"]
    scale = alpha / dim if alpha is not None and dim is not None else 1.0
    return torch.kron(w1, w2).reshape(shape) * scale


def trained(load: Callable[[], Any], lora_type: str, rank: int) -> Any:
    pipe = load()
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=rank,
        lora_alpha=ALPHA, lora_type=lora_type,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    for param in pipe.dit.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator) * 0.2
    return pipe


@pytest.mark.parametrize("case", list(CASES))
def test_comfyui_reconstruction_of_the_file_is_peft_delta(
    load_qwen: Callable[[], Any], tmp_path: Path, case: str
) -> None:
    lora_type, rank = CASES[case]
    pipe = trained(load_qwen, lora_type, rank)
    path = export(lora_state_dict(pipe.dit), "comfyui", tmp_path / f"{case}.safetensors")
    file = load_file(str(path))
    prefix = "lokr_" if lora_type == "lokr" else "hada_"
    assert all(k.startswith("diffusion_model.transformer_blocks.") for k in file)
    assert all(prefix in k or k.endswith(".alpha") for k in file)
    split = {"lokr-r2": "lokr_w2_a", "lokr-r8": "lokr_w2", "loha-r4": "hada_w2_b"}[case]
    assert any(k.endswith("." + split) for k in file)
    layers = {n: m for n, m in pipe.dit.named_modules() if hasattr(m, "get_delta_weight")}
    assert len(layers) == 3 * 2
    base = load_qwen()
    want = {}
    for name, layer in layers.items():
        peft_delta = layer.get_delta_weight("default").detach()
        assert peft_delta.abs().max() > 1e-3  # the adapter does something
        theirs = comfy_delta(file, "diffusion_model." + name, peft_delta.shape)
        torch.testing.assert_close(theirs, peft_delta, rtol=1e-5, atol=1e-6)
        want[name] = dict(base.dit.named_modules())[name].weight.detach() + peft_delta

    fresh = load_qwen()  # our reader (generate --lora, --merge-lora) merges the same update
    assert merge_lora(fresh.dit, read_lora_file(path, fresh.dit)) == 6
    modules = dict(fresh.dit.named_modules())
    for name, weight in want.items():
        torch.testing.assert_close(modules[name].weight, weight, rtol=1e-5, atol=1e-6)

    again = load_qwen()  # --lora-checkpoint: the same in-model tensors again
    switch_pipe_to_training_mode(
        again, lora_base_model="dit", lora_target_modules=TARGETS, lora_rank=rank,
        lora_alpha=ALPHA, lora_type=lora_type, lora_checkpoint=str(path),
    )  # fmt: skip
    theirs = dict(again.dit.named_parameters())
    for name, param in pipe.dit.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(theirs[name], param, rtol=1e-6, atol=1e-7)
