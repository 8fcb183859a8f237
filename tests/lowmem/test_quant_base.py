"""``--base-precision``: the tiny Qwen-Image DiT stored in fp8 / int8 / nf4 (torchao), what
stays in full precision, the bytes, and the start-up refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.quantize import (
    apply_base_precision,
    check_base_precision,
    check_device_runs,
    quantize_model,
    weight_bytes,
)

qwen = pytest.importorskip("diffsynth_qwen_image.family")
KEPT = qwen.HIGH_PRECISION["dit"]
# (subclass name, dtype of its data): what each precision must store
STORED = {
    "fp8": ("Float8Tensor", torch.float8_e4m3fn),
    "int8": ("Int8Tensor", torch.int8),
    "nf4": ("NF4Tensor", torch.uint8),
}


def _dit() -> torch.nn.Module:
    from diffsynth_qwen_image.tiny import tiny_transformer

    return tiny_transformer()


def _linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _kept(name: str) -> bool:
    return any(name == k or name.startswith(k + ".") for k in KEPT)


def _data(weight: torch.Tensor) -> torch.Tensor:
    inner = "quantized_data" if type(weight).__name__ == "NF4Tensor" else "qdata"
    return getattr(weight, inner)


@pytest.mark.parametrize("precision", ["fp8", "int8", "nf4"])
def test_the_blocks_are_stored_quantized_and_the_kept_layers_are_not(precision: str) -> None:
    model = _dit()
    before = weight_bytes(model)
    done = quantize_model(model, precision, KEPT)
    subclass, dtype = STORED[precision]
    for name, layer in _linears(model).items():
        if _kept(name):
            assert type(layer.weight) is torch.nn.Parameter and layer.weight.dtype == torch.float32
        else:
            assert name in done and type(layer.weight).__name__ == subclass, name
            assert _data(layer.weight).dtype == dtype, name
    # every block's modulation is quantized (6.8B of Qwen-Image's 20.4B at real size)
    modulation = {f"transformer_blocks.{i}.{m}.1" for i in (0, 1) for m in ("img_mod", "txt_mod")}
    assert modulation <= set(done)
    after = weight_bytes(model)
    quantized = sum(_linears(_dit())[n].weight.numel() for n in done)
    # fp32 -> about 1 byte (fp8, int8) or half a byte (nf4) per quantized weight, plus scales
    per_weight = {"fp8": 1.0, "int8": 1.0, "nf4": 0.5}[precision]
    saved = before - after
    assert saved >= quantized * (4 - per_weight) * 0.95, (before, after)
    assert saved <= quantized * (4 - per_weight), (before, after)


def test_the_quantized_dit_still_computes_what_the_full_one_does() -> None:
    full, tokens = _dit(), torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0))
    kwargs: dict[str, Any] = dict(
        hidden_states=tokens, encoder_hidden_states=torch.randn(1, 8, 64), timestep=torch.tensor([0.5]),
        encoder_hidden_states_mask=torch.ones(1, 8, dtype=torch.bool), img_shapes=[[(1, 4, 4)]], return_dict=False,
    )  # fmt: skip
    reference = full(**kwargs)[0]
    for precision, tolerance in (("int8", 0.02), ("fp8", 0.05), ("nf4", 0.15)):
        model = _dit()
        quantize_model(model, precision, KEPT)
        error = (model(**kwargs)[0] - reference).abs().max() / reference.abs().max()
        assert 0 < error < tolerance, (precision, float(error))


def test_apply_follows_the_family_declaration_and_skips_trained_and_absent_models() -> None:
    dit, encoder = _dit(), _dit()
    family = SimpleNamespace(name="f", high_precision_modules={"dit": KEPT, "text_encoder": ()})
    pipe = SimpleNamespace(family=family, dit=dit, text_encoder=encoder, vae=None)
    done = apply_base_precision(pipe, "int8", trainable_models=("text_encoder",))
    assert [(q.model, q.layers) for q in done] == [("dit", 28), ("text_encoder", 0)]
    assert done[0].bytes_after < done[0].bytes_before / 2
    assert type(encoder.proj_out.weight) is torch.nn.Parameter  # trained fully: left alone
    cache_style = SimpleNamespace(family=family, text_encoder=_dit())
    (only,) = apply_base_precision(cache_style, "fp8", models=("text_encoder", "dit"))
    assert only.model == "text_encoder" and only.layers == 34  # no DiT loaded; () keeps none


def test_layers_a_fully_trained_model_shares_with_the_base_stay_as_they_are() -> None:
    dit = _dit()  # as Wan's ``vace`` model is a view of the DiT's VACE blocks
    branch = torch.nn.ModuleDict({"blocks": dit.transformer_blocks[1]})
    family = SimpleNamespace(name="f", high_precision_modules={"dit": KEPT})
    pipe = SimpleNamespace(family=family, dit=dit, vace=branch)
    apply_base_precision(pipe, "fp8", trainable_models=("vace",))
    for name, layer in _linears(dit).items():
        shared = name.startswith("transformer_blocks.1.")
        assert (type(layer.weight).__name__ == "Float8Tensor") == (not shared and not _kept(name))


def test_a_kept_path_the_model_lacks_is_a_plugin_error() -> None:
    from diffsynth_core.errors import PluginError

    family = SimpleNamespace(name="f", high_precision_modules={"dit": ("img_in", "final_proj")})
    with pytest.raises(PluginError, match="f: high_precision_modules names dit.final_proj"):
        apply_base_precision(SimpleNamespace(family=family, dit=_dit()), "int8")


def test_start_up_refusals() -> None:
    family = SimpleNamespace(name="qwen-image", high_precision_modules=qwen.HIGH_PRECISION)
    with pytest.raises(ConfigError, match="--base-precision 'fp3' is unknown"):
        check_base_precision("fp3", family)
    with pytest.raises(ConfigError, match="dit quantized, and --trainable-models trains it"):
        check_base_precision("int8", family, ["dit"])
    check_base_precision("int8", family, ["controlnet"])  # another model trained fully: fine
    check_base_precision("bf16", family, ["dit"])  # bf16 is not quantized
    with pytest.raises(ConfigError, match="family 'toy' declares no base models"):
        check_base_precision("fp8", SimpleNamespace(name="toy"))


@pytest.mark.skipif(
    importlib.util.find_spec("mslk") is not None, reason="int4's kernel package is installed"
)
def test_int4_without_its_kernel_is_one_error_and_nf4_fp8_int8_run_on_cpu() -> None:
    with pytest.raises(ConfigError, match=r"--base-precision int4 cannot run on cpu \(.*mslk"):
        check_device_runs("int4", "cpu")
    for precision in ("fp8", "int8", "nf4", "fp8-compute"):
        check_device_runs(precision, "cpu")


# --- training through the CLI's build: loss curves and the LoRA file --------------------------

STEPS = 30
# measured over 30 steps (lr 1e-3, LoRA rank 4, 32x32): max |loss - fp32 loss| 1.2e-3 (fp8),
# 2.2e-4 (int8) with the family's kept layers; quantizing every linear layer instead gives
# 7.4e-3 and 1.6e-3 (docs/memory.md)
TOLERANCE = {"fp8": 5e-3, "int8": 1e-3}


@pytest.fixture(scope="module")
def runs(
    qwen_tiny: Path, images: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    from .conftest import run_train

    root = tmp_path_factory.mktemp("base-precision")
    outputs = {}
    for precision in (None, "fp8", "int8"):
        outputs[precision or "fp32"] = run_train(
            model="qwen-image", model_path=str(qwen_tiny), dataset=str(images),
            output=str(root / (precision or "fp32")), max_steps=STEPS, base_precision=precision,
            cache_features=True,
        )  # fmt: skip
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_a_quantized_base_trains_a_lora_whose_losses_follow_the_fp32_run(
    runs: dict[str, Path], precision: str
) -> None:
    from .conftest import losses

    reference, got = torch.tensor(losses(runs["fp32"])), torch.tensor(losses(runs[precision]))
    assert len(got) == len(reference) == STEPS
    difference = (got - reference).abs()
    assert difference.max() < TOLERANCE[precision], difference.max()
    assert difference.max() > 0  # the base really was another one


@pytest.mark.slow
def test_the_lora_of_a_quantized_base_changes_the_full_base_in_diffusers_as_a_hand_merge(
    runs: dict[str, Path], qwen_tiny: Path
) -> None:
    from diffusers import QwenImagePipeline
    from safetensors.torch import load_file

    lora = load_file(str(runs["int8"] / "final.safetensors"))
    assert lora and all(k.startswith("transformer.") for k in lora)
    assert all(v.dtype == torch.float32 for v in lora.values())
    base = QwenImagePipeline.from_pretrained(str(qwen_tiny)).transformer.state_dict()
    pipe = QwenImagePipeline.from_pretrained(str(qwen_tiny))
    pipe.load_lora_weights(str(runs["int8"] / "final.safetensors"))
    pipe.fuse_lora()
    fused = {k.replace(".base_layer", ""): v for k, v in pipe.transformer.state_dict().items()}
    modules = {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in lora}
    changed = 0
    for module in modules:
        a, b = (
            lora[f"transformer.{module}.lora_A.weight"],
            lora[f"transformer.{module}.lora_B.weight"],
        )
        by_hand = base[f"{module}.weight"] + b @ a
        assert torch.allclose(fused[f"{module}.weight"], by_hand, atol=1e-6), module
        changed += int((b @ a).abs().max() > 1e-4)
    # most pairs changed the base noticeably (the last block's text outputs reach no loss)
    assert changed >= len(modules) // 2, changed
