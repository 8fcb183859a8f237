"""LoRA injection, export, the key forms other tools write, and switch_pipe_to_training_mode."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diffsynth_core.errors import ConfigError, ModelFileError
from diffsynth_core.lora.inject import (
    inject_lora,
    load_lora_weights,
    lora_state_dict,
    merge_lora,
    normalize_lora_state_dict,
)
from diffsynth_core.pipeline import BasePipeline
from diffsynth_core.training.losses import FlowMatchSFTLoss
from diffsynth_core.training.module import DiffusionTrainingModule, gradient_checkpoint_forward


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q = torch.nn.Linear(8, 8)
        self.to_out = torch.nn.ModuleList([torch.nn.Linear(8, 8)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out[0](torch.tanh(self.to_q(x)))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.transformer_blocks = torch.nn.ModuleList([Block(), Block()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


def _trained_lora(alpha: float = 8.0) -> tuple[Net, dict[str, torch.Tensor]]:
    net = Net()
    inject_lora(net, "to_q,to_out.0", rank=4, alpha=alpha)
    for name, p in net.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return net, lora_state_dict(net)


def _names(net: torch.nn.Module) -> list[str]:
    return [n for n, _ in net.named_modules()]


def test_export_folds_alpha_so_a_plain_merge_reproduces_the_output() -> None:
    net, state = _trained_lora(alpha=8.0)
    assert set(state) == {f"transformer_blocks.{i}.{m}.lora_{ab}.weight" for i in (0, 1) for m in ("to_q", "to_out.0") for ab in "AB"}
    x = torch.randn(3, 8)
    plain = Net()
    assert merge_lora(plain, state) == 4
    torch.testing.assert_close(plain(x), net(x), atol=1e-5, rtol=0)


def _kohya(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".lora_")
        flat = "lora_unet_" + module.replace(".", "_")
        if kind.startswith("A"):
            out[f"{flat}.lora_down.weight"] = value
            out[f"{flat}.alpha"] = torch.tensor(2.0)  # alpha 2, rank 4: up must be doubled
        else:
            out[f"{flat}.lora_up.weight"] = value * 2
    return out


@pytest.mark.parametrize(
    "form",
    [
        lambda s: {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v for k, v in s.items()},
        lambda s: {"transformer." + k: v for k, v in s.items()},
        lambda s: {"diffusion_model." + k.replace("lora_A", "lora_down").replace("lora_B", "lora_up"): v for k, v in s.items()},
        _kohya,
    ],
    ids=["diffsynth-studio", "diffusers", "comfyui", "kohya"],
)
def test_every_key_form_normalizes_to_the_same_lora(form: Any) -> None:
    _, state = _trained_lora()
    normalized = normalize_lora_state_dict(form(state), _names(Net()))
    assert set(normalized) == set(state)
    for key in state:
        torch.testing.assert_close(normalized[key], state[key])


def test_a_file_without_lora_keys_is_a_clear_error() -> None:
    with pytest.raises(ModelFileError, match="no LoRA weights"):
        normalize_lora_state_dict({"weight": torch.zeros(1)}, [])


def test_continue_training_restores_the_same_function() -> None:
    net, state = _trained_lora(alpha=8.0)
    again = Net()
    inject_lora(again, "to_q,to_out.0", rank=4, alpha=8.0)
    load_lora_weights(again, state)
    x = torch.randn(2, 8)
    torch.testing.assert_close(again(x), net(x), atol=1e-6, rtol=0)


class TinyPipe(BasePipeline):
    model_names = ("dit", "vae")

    def __init__(self) -> None:
        super().__init__()
        self.dit = Net()
        self.vae = torch.nn.Linear(8, 8)

    def model_fn(self, latents: torch.Tensor, timestep: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.dit(latents)


class Module(DiffusionTrainingModule):
    def __init__(self, **lora: Any) -> None:
        super().__init__()
        self.pipe = TinyPipe()
        self.switch_pipe_to_training_mode(self.pipe, **lora)


def test_switch_freezes_everything_but_lora_in_fp32() -> None:
    module = Module(lora_base_model="dit", lora_target_modules="to_q", lora_rank=2)
    trainable = module.trainable_param_names()
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in module.trainable_modules())
    exported = module.export_trainable_state_dict(remove_prefix="pipe.dit.")
    assert set(exported) == {f"transformer_blocks.{i}.to_q.lora_{ab}.weight" for i in (0, 1) for ab in "AB"}


def test_full_training_of_a_named_model_and_unknown_names() -> None:
    module = Module(trainable_models="vae")
    assert module.trainable_param_names() == {"pipe.vae.weight", "pipe.vae.bias"}
    with pytest.raises(ConfigError, match="no model 'unet'"):
        Module(trainable_models="unet")


def test_sft_loss_is_finite_weighted_and_trains() -> None:
    module = Module(lora_base_model="dit", lora_target_modules="to_q,to_out.0", lora_rank=4)
    torch.manual_seed(0)
    x0 = torch.randn(4, 8)
    opt = torch.optim.AdamW(module.trainable_modules(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = FlowMatchSFTLoss(module.pipe, input_latents=x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < sum(losses[:10]) * 0.9


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    block = Block()
    x = torch.randn(2, 8, requires_grad=True)
    grads = []
    for use_gc, offload in ((False, False), (True, False), (True, True)):
        x.grad = None
        gradient_checkpoint_forward(block, use_gc, offload, x).sum().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], grads[2])


# --- files: what is written and what is refused ----------------------------------------------


def _write(net: torch.nn.Module, folder: Any, fmt: str = "peft") -> Any:
    from diffsynth_core.training.logger import ModelLogger

    return ModelLogger(folder, export_format=fmt).write(net, net.state_dict(), "final", 1, 0)


def test_the_writer_gives_bare_folded_keys_for_a_plain_module(tmp_path: Any) -> None:
    """A plain ``nn.Module`` with peft layers (no ``export_trainable_state_dict``): the keys
    were ``to_q.lora_A.default.weight``, the file was taken for full weights, alpha unfolded."""
    import json

    from safetensors import safe_open

    net, state = _trained_lora(alpha=8.0)
    path = _write(net, tmp_path)
    with safe_open(str(path), "pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
        saved = {k: handle.get_tensor(k) for k in keys}
    assert keys == set(state) and not any(".default." in k for k in keys)
    assert meta["diffsynth.weights"] == "lora"
    # the targets as given to peft, not the last name part ("0"); the modules by their names
    assert json.loads(meta["diffsynth.lora_target_modules"]) == ["to_out.0", "to_q"]
    assert json.loads(meta["diffsynth.target_modules"]) == [
        f"transformer_blocks.{i}.{t}" for i in (0, 1) for t in ("to_out.0", "to_q")
    ]
    x = torch.randn(3, 8)
    plain = Net()
    merge_lora(plain, normalize_lora_state_dict(saved, _names(plain)))
    torch.testing.assert_close(plain(x), net(x), atol=1e-5, rtol=0)


def test_a_lora_file_with_nan_is_refused_naming_file_and_key(tmp_path: Any) -> None:
    from safetensors.torch import save_file

    from diffsynth_core.lora.inject import read_lora_file

    _, state = _trained_lora()
    bad = dict(state)
    key = "transformer_blocks.1.to_q.lora_B.weight"
    bad[key] = bad[key].clone()
    bad[key][0, 0] = float("inf")
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelFileError) as caught:
        read_lora_file(tmp_path / "bad.safetensors", Net())
    message = str(caught.value)
    assert "bad.safetensors" in message and key in message and "NaN/inf" in message
    assert "\n" not in message


def test_an_unknown_target_module_lists_valid_names() -> None:
    for targets in ("nosuch", "to_q,nosuch"):
        with pytest.raises(ConfigError) as caught:
            inject_lora(Net(), targets, rank=2)
        message = str(caught.value)
        assert "nosuch" in message and "to_q" in message and "to_out.0" in message
        assert "\n" not in message


class Wide(Net):
    def __init__(self) -> None:
        super().__init__()
        self.transformer_blocks[0].to_q = torch.nn.Linear(8, 16)


def test_a_lora_for_another_width_names_file_key_and_both_shapes(tmp_path: Any) -> None:
    from safetensors.torch import save_file

    from diffsynth_core.lora.inject import read_lora_file

    _, state = _trained_lora()
    save_file(state, str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelFileError) as caught:
        read_lora_file(tmp_path / "lora.safetensors", Wide())
    message = str(caught.value)
    assert "lora.safetensors" in message
    assert "transformer_blocks.0.to_q.lora_A.weight" in message
    assert "(4, 8)" in message and "(16, 8)" in message


def test_lora_checkpoint_of_another_rank_names_file_key_and_both_shapes(tmp_path: Any) -> None:
    from safetensors.torch import save_file

    _, state = _trained_lora()  # rank 4
    save_file(state, str(tmp_path / "rank4.safetensors"))
    with pytest.raises(ModelFileError) as caught:
        Module(
            lora_base_model="dit",
            lora_target_modules="to_q,to_out.0",
            lora_rank=2,
            lora_checkpoint=str(tmp_path / "rank4.safetensors"),
        )
    message = str(caught.value)
    assert "rank4.safetensors" in message and ".lora_A.weight" in message
    assert "(4, 8)" in message and "(2, 8)" in message


def test_lora_checkpoint_continues_at_the_trained_strength(tmp_path: Any) -> None:
    """Written at rank 4, alpha 8 (scale 2) and read back by ``lora_checkpoint``: the same
    function, for the file we write (alpha folded) and for a kohya one (alpha as a tensor)."""
    from safetensors.torch import save_file

    net, _ = _trained_lora(alpha=8.0)
    ours = _write(net, tmp_path / "ours", "comfyui")
    kohya_path = tmp_path / "kohya.safetensors"
    kohya = _kohya(lora_state_dict(net))  # alpha 2 as a tensor, up doubled
    save_file(kohya, str(kohya_path))
    x = torch.randn(3, 8)
    for path in (ours, kohya_path):
        module = Module(
            lora_base_model="dit", lora_target_modules="to_q,to_out.0", lora_rank=4,
            lora_alpha=8.0, lora_checkpoint=str(path),
        )  # fmt: skip
        torch.testing.assert_close(module.pipe.dit(x), net(x), atol=1e-5, rtol=0)


def test_the_seeds_mapping_lora_state_dict_loads_into_the_injected_model() -> None:
    net, state = _trained_lora(alpha=4.0)  # alpha = rank: the file's B is the layer's B
    module = Module(lora_base_model="dit", lora_target_modules="to_q,to_out.0", lora_rank=4)
    mapped = module.mapping_lora_state_dict(state)
    missing, unexpected = module.pipe.dit.load_state_dict(mapped, strict=False)
    assert not unexpected and len(mapped) == len(state)
    x = torch.randn(3, 8)
    torch.testing.assert_close(module.pipe.dit(x), net(x), atol=1e-6, rtol=0)


def test_preset_lora_is_merged_before_training_and_data_process_adds_no_lora(tmp_path: Any) -> None:
    from safetensors.torch import save_file

    net, state = _trained_lora(alpha=8.0)
    save_file(state, str(tmp_path / "preset.safetensors"))
    module = Module(
        lora_base_model="dit", lora_target_modules="to_q", lora_rank=2,
        preset_lora_path=str(tmp_path / "preset.safetensors"),
    )  # fmt: skip
    x = torch.randn(3, 8)
    # merged into the base weights; the new LoRA (B = 0) adds nothing yet
    torch.testing.assert_close(module.pipe.dit(x), net(x), atol=1e-5, rtol=0)
    assert all(n.endswith(("lora_A.default.weight", "lora_B.default.weight")) for n in module.trainable_param_names())
    caching = Module(lora_base_model="dit", lora_target_modules="to_q", task="sft:data_process")
    assert not caching.trainable_param_names()
