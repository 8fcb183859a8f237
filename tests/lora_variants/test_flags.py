"""``--merge-lora`` fuses a LoRA into the base before training, and ``--lora-dropout`` /
``--use-dora`` / ``--lora-type`` reach peft, through the CLI's build of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffsynth_core.lora.inject import lora_state_dict

from .test_diffusers_variants import export, hand_merged, trained

DATA = Path(__file__).resolve().parents[2] / "examples" / "qwen_image" / "data"


def built(qwen_tiny: Path, tmp_path: Path, **flags: Any) -> Any:
    """The training module ``diffsynth train`` builds for these flags (nothing is trained)."""
    from accelerate import Accelerator

    from diffsynth_core.cli.run.build import build_module, prepare

    cli = {"model": "qwen-image", "model_path": str(qwen_tiny), "dataset": str(DATA),
           "output": str(tmp_path / "run"), "lora_rank": 4, **flags}  # fmt: skip
    return build_module(prepare(cli, None, []), Accelerator(cpu=True))[0]


def test_merge_lora_fuses_the_file_into_the_base_before_training(
    load_qwen: Callable[[], Any], qwen_tiny: Path, tmp_path: Path
) -> None:
    preset = trained(load_qwen, use_dora=True)
    path = export(lora_state_dict(preset.dit), "diffusers", tmp_path / "preset.safetensors")
    module = built(qwen_tiny, tmp_path, merge_lora=str(path))
    want = hand_merged(load_qwen, preset).dit
    wanted, base = dict(want.named_modules()), dict(load_qwen().dit.named_modules())
    changed = 0
    for name, layer in module.pipe.dit.named_modules():
        if hasattr(layer, "base_layer"):  # the new LoRA sits on the merged base
            weight = layer.base_layer.weight
            torch.testing.assert_close(weight, wanted[name].weight, rtol=0, atol=1e-6)
            changed += not torch.equal(weight, base[name].weight)
            assert not layer.lora_B["default"].weight.any()  # and starts at zero
    assert changed == 10  # the preset's 5 targets x 2 blocks (all among the family's targets)


def test_variant_flags_reach_peft(qwen_tiny: Path, tmp_path: Path) -> None:
    dit = built(qwen_tiny, tmp_path, lora_dropout=0.25, use_dora=True, use_rslora=True).pipe.dit
    layer = dit.transformer_blocks[0].attn.to_q
    assert layer.lora_dropout["default"].p == 0.25 and layer.use_dora["default"]
    assert layer.scaling["default"] == 4 / 4**0.5  # alpha (= rank) / sqrt(rank)
    x = torch.randn(3, layer.in_features)
    layer.lora_B["default"].weight.data.normal_()
    dit.train()
    assert not torch.equal(layer(x), layer(x))  # dropout is on in training
    dit.eval()
    assert torch.equal(layer(x), layer(x))
    lokr = built(qwen_tiny, tmp_path, lora_type="lokr", lora_format="comfyui").pipe.dit
    assert hasattr(lokr.transformer_blocks[0].attn.to_q, "lokr_w1")


def test_lycoris_in_comfyui_names_is_refused_for_a_family_that_renames_its_keys() -> None:
    from types import SimpleNamespace

    import pytest

    from diffsynth_core.cli.run.build import check_lora_variant
    from diffsynth_core.cli.run.config import TrainConfig
    from diffsynth_core.errors import ConfigError
    from diffsynth_core.lora.formats import LoraLayout

    renaming = SimpleNamespace(name="fam", layout=lambda: LoraLayout(comfyui_keys=lambda sd, kind: sd))
    plain = SimpleNamespace(name="plain", layout=LoraLayout)
    lokr = TrainConfig(lora_type="loha", lora_format="comfyui")
    check_lora_variant(lokr, plain)  # diffusers' names under diffusion_model.: fine
    with pytest.raises(ConfigError, match="use --lora-format peft"):
        check_lora_variant(lokr, renaming)
    check_lora_variant(TrainConfig(lora_type="loha", lora_format="peft"), renaming)


def test_merge_lora_into_an_fp8_base_merges_before_quantizing(
    load_qwen: Callable[[], Any], qwen_tiny: Path, tmp_path: Path
) -> None:
    """torchao's fp8 weights take no in-place add (merging into them was a traceback): the
    LoRA is merged into the loaded weights, which are then stored in fp8."""
    preset = trained(load_qwen, use_dora=False)
    path = export(lora_state_dict(preset.dit), "diffusers", tmp_path / "preset.safetensors")
    module = built(qwen_tiny, tmp_path, merge_lora=str(path), base_precision="fp8")
    want = dict(hand_merged(load_qwen, preset).dit.named_modules())
    base = dict(load_qwen().dit.named_modules())
    closer = 0
    for name, layer in module.pipe.dit.named_modules():
        if hasattr(layer, "base_layer") and name in want:
            weight = layer.base_layer.weight
            assert type(weight).__name__ == "Float8Tensor"  # stored in fp8
            got = weight.dequantize().float()
            to_merged = (got - want[name].weight.float()).norm()
            to_base = (got - base[name].weight.float()).norm()
            closer += bool(to_merged < to_base)
    assert closer == 10  # every merged layer holds the merge (within fp8's rounding)


def test_the_start_up_summary_names_the_adapter() -> None:
    from types import SimpleNamespace

    from diffsynth_core.cli.run.summary import adapter_name

    def name(**flags: Any) -> str:
        return adapter_name(SimpleNamespace(**{"lora_type": "lora", "use_dora": False, "use_rslora": False, **flags}))

    assert name() == "LoRA" and name(lora_type="lokr") == "LoKr" and name(lora_type="loha") == "LoHa"
    assert name(use_dora=True, use_rslora=True) == "LoRA (DoRA, rsLoRA)"
