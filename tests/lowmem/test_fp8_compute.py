"""``--base-precision fp8-compute``: Fp8Linear's two fp8 matmuls against a full-precision
linear layer, what autograd keeps, LoRA on top, and a run through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.fp8_compute import Fp8Linear, quantize_rows
from diffsynth_core.training.quantize import check_device_runs, quantize_model, weight_bytes

from .conftest import train_in_subprocess

# measured relative error (Frobenius) on the data of _layer and _inputs: 3.7% forward, 3.5%
# grad_input (e4m3 x e4m3, one scale per row of each operand); scales per input column instead
# of per row give 98% (forward) and 97% (backward), W^T for W 143% and 144%
BOUND = 0.05


def _layer(n: int = 128, k: int = 128, seed: int = 0) -> torch.nn.Linear:
    """A frozen linear layer whose rows and columns differ in size by up to 100x, so a scale on
    the wrong axis (or a weight copy not transposed) is far off, not a few percent off."""
    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(k, n)
    rows = torch.logspace(-2, 0, n)[torch.randperm(n, generator=gen)]
    cols = torch.logspace(-2, 0, k)[torch.randperm(k, generator=gen)]
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, k, generator=gen) * rows[:, None] * cols[None, :])
    return layer.requires_grad_(False)


def _inputs(k: int = 128, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # leading batch dims, and not contiguous (a transposed view), as attention outputs are
    x = torch.randn(2, k, 12, generator=gen).transpose(1, 2) * torch.logspace(-1, 1, 12)[:, None]
    return x, torch.randn(2, 12, 128, generator=gen)


def _errors(fp8: torch.nn.Module, full: torch.nn.Linear) -> tuple[float, float]:
    """Relative errors of ``fp8``'s output and input gradient against ``full``'s."""
    x, grad = _inputs(full.in_features)
    x_fp8, x_full = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, reference = fp8(x_fp8), full(x_full)
    out.backward(grad[..., : full.out_features])
    reference.backward(grad[..., : full.out_features])
    assert x_fp8.grad is not None and x_full.grad is not None

    def relative(got: torch.Tensor, want: torch.Tensor) -> float:
        return float((got.detach().float() - want.detach()).norm() / want.detach().norm())

    return relative(out, reference), relative(x_fp8.grad, x_full.grad)


def test_forward_and_input_gradient_follow_the_full_precision_layer() -> None:
    full = _layer()
    forward, backward = _errors(Fp8Linear(full), full)
    assert 0 < forward < BOUND and 0 < backward < BOUND, (forward, backward)
    # a rectangular layer with a bias: the shapes of both copies and of the output
    wide = _layer(n=96, k=128)
    wide.bias.normal_()
    forward, backward = _errors(Fp8Linear(wide), wide)
    assert forward < BOUND and backward < BOUND, (forward, backward)


def test_a_scale_on_the_wrong_axis_or_an_untransposed_weight_is_far_off() -> None:
    """The bound above is tight enough to catch each of these mistakes, in both directions."""
    full = _layer()
    column_scales = Fp8Linear(full)  # scales per input column where those per row belong
    _, per_column = quantize_rows(full.weight.t())
    column_scales.weight_scale = torch.nn.Parameter(
        per_column.t().contiguous(), requires_grad=False
    )
    forward, backward = _errors(column_scales, full)
    assert forward > 10 * BOUND and backward > 10 * BOUND, (forward, backward)
    transposed = _layer()  # a layer holding W^T where W belongs
    transposed.weight.copy_(full.weight.t())
    untransposed = Fp8Linear(transposed)
    forward, backward = _errors(untransposed, full)
    assert forward > 10 * BOUND and backward > 10 * BOUND, (forward, backward)


def test_zero_inputs_and_gradients_give_zeros_not_nan() -> None:
    layer = Fp8Linear(_layer())
    x = torch.zeros(3, 128, requires_grad=True)
    out = layer(x)
    out.backward(torch.zeros_like(out))
    assert x.grad is not None
    assert torch.equal(out, layer.bias.expand_as(out)) and torch.equal(x.grad, torch.zeros_like(x))


def test_the_weight_is_stored_in_fp8_with_a_scale_per_row_and_dequantizes_for_readers() -> None:
    full = _layer(n=96, k=128)
    layer = Fp8Linear(full)
    assert layer.weight_fp8.shape == (96, 128) and layer.weight_fp8.dtype == torch.float8_e4m3fn
    assert layer.weight_scale.shape == (1, 96) and layer.weight_scale.dtype == torch.float32
    assert not any(p.requires_grad for p in layer.parameters() if p is not layer.bias)
    # one byte per weight (as torchao's fp8) plus an fp32 scale per row ... and the fp32 bias
    assert weight_bytes(layer) == 96 * 128 + 4 * 96 + 4 * 96
    relative = (layer.weight - full.weight).norm() / full.weight.norm()
    assert layer.weight.dtype == torch.float32 and 0 < relative < 0.05


def _inner(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold ``tensor``'s data (a torchao subclass: its data and scales)."""
    if type(tensor) in (torch.Tensor, torch.nn.Parameter):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]  # subclass protocol
    return [t for name in names for t in _inner(getattr(tensor, name))]


def _own_bytes_saved(layer: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward, the layer's own tensors aside."""
    own = {t.untyped_storage().data_ptr() for p in layer.parameters() for t in _inner(p)}
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x)
    # a tensor subclass (a quantized weight) counts by its inner tensors
    return sum(
        inner.nbytes for t in saved for inner in _inner(t) if inner.untyped_storage().data_ptr() not in own
    )


def test_a_forward_keeps_nothing_of_the_input_for_backward() -> None:
    full = _layer().to(torch.bfloat16)
    x = torch.randn(64, 128, dtype=torch.bfloat16, requires_grad=True)
    assert _own_bytes_saved(Fp8Linear(full), x) == 0
    assert _own_bytes_saved(full, x) == 0  # a frozen nn.Linear keeps only its weight ...
    trained = _layer().to(torch.bfloat16).requires_grad_(True)
    assert _own_bytes_saved(trained, x) == x.nbytes  # ... a trained one the input too
    # weight-only fp8 keeps its fp8 weight only (quantize.py: not torchao's bf16 copy)
    weight_only = torch.nn.Sequential(_layer().to(torch.bfloat16))
    quantize_model(weight_only, "fp8")
    assert _own_bytes_saved(weight_only, x) == 0


def test_lora_wraps_it_trains_its_adapters_and_never_the_weight() -> None:
    from diffsynth_core.lora.inject import inject_lora

    model = torch.nn.Sequential(_layer(), torch.nn.GELU(), _layer(seed=2))
    assert quantize_model(model, "fp8-compute") == ["0", "2"]
    inject_lora(model, "0,2", rank=4)
    for index in (0, 2):
        assert type(model[index].base_layer) is Fp8Linear  # peft's lora.Linear around it
        torch.nn.init.normal_(model[index].lora_B.default.weight)  # B starts at 0
    x = torch.randn(5, 128, requires_grad=True)
    model(x).square().sum().backward()
    grads = {name: p.grad is not None for name, p in model.named_parameters()}
    assert grads and all(grads[n] == ("lora_" in n) for n in grads), grads
    assert x.grad is not None and x.grad.abs().sum() > 0  # through both fp8 layers


def test_layers_whose_sizes_are_not_multiples_of_16_stay_plain_linear_layers() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.Linear(32, 24), torch.nn.Linear(24, 64)
    )
    assert quantize_model(model, "fp8-compute") == ["0"]
    assert type(model[0]) is Fp8Linear
    assert type(model[1]) is torch.nn.Linear and type(model[2]) is torch.nn.Linear


def test_the_tiny_dit_computes_what_the_full_one_does_with_its_kept_layers_kept() -> None:
    qwen = pytest.importorskip("diffsynth_qwen_image.family")
    from diffsynth_qwen_image.tiny import tiny_transformer

    kept = qwen.HIGH_PRECISION["dit"]
    full, model = tiny_transformer(), tiny_transformer()
    done = quantize_model(model, "fp8-compute", kept)
    for name, layer in model.named_modules():
        if isinstance(layer, torch.nn.Linear):
            inside_kept = any(name == k or name.startswith(k + ".") for k in kept)
            assert (type(layer) is Fp8Linear) == (not inside_kept) == (name in done), name
    gen = torch.Generator().manual_seed(0)
    kwargs = dict(
        hidden_states=torch.randn(1, 16, 64, generator=gen),
        encoder_hidden_states=torch.randn(1, 8, 64, generator=gen), timestep=torch.tensor([0.5]),
        encoder_hidden_states_mask=torch.ones(1, 8, dtype=torch.bool), img_shapes=[[(1, 4, 4)]],
        return_dict=False,
    )  # fmt: skip
    reference = full(**kwargs)[0]
    error = (model(**kwargs)[0] - reference).abs().max() / reference.abs().max()
    # measured 2.4e-3 (torchao's weight-only fp8 on the same input: 2.1e-3)
    assert 0 < error < 0.02, float(error)


def test_a_device_without_scaled_mm_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    check_device_runs("fp8-compute", "cpu")  # runs here

    def missing(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("torch._scaled_mm is only supported on CUDA devices with compute "
                           "capability >= 9.0 or 8.9\nmore detail")  # fmt: skip

    monkeypatch.setattr(torch, "_scaled_mm", missing)
    with pytest.raises(ConfigError) as error:
        check_device_runs("fp8-compute", "cpu")
    assert str(error.value) == (
        "--base-precision fp8-compute cannot run on cpu (torch._scaled_mm is only supported on "
        "CUDA devices with compute capability >= 9.0 or 8.9); use fp8, int8 or nf4 there"
    )


# --- training through the CLI: losses, the LoRA file ------------------------------------------

STEPS = 6


@pytest.fixture(scope="module")
def runs(
    qwen_tiny: Path, images: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    from .conftest import run_train

    root = tmp_path_factory.mktemp("fp8-compute")
    return {
        name: run_train(
            model="qwen-image",
            model_path=str(qwen_tiny),
            dataset=str(images),
            output=str(root / name),
            max_steps=STEPS,
            base_precision=precision,
            cache_features=True,
        )  # fmt: skip
        for name, precision in (("fp32", None), ("fp8-compute", "fp8-compute"))
    }


@pytest.mark.slow
def test_a_lora_on_an_fp8_compute_base_follows_the_full_run_and_saves_the_same_keys(
    runs: dict[str, Path],
) -> None:
    from .conftest import losses

    reference, got = torch.tensor(losses(runs["fp32"])), torch.tensor(losses(runs["fp8-compute"]))
    assert len(got) == len(reference) == STEPS
    difference = (got - reference).abs()
    # measured max 6.1e-4 over 6 steps (losses 1.0-2.5; weight-only fp8: 3.1e-4)
    assert 0 < difference.max() < 5e-3, difference
    full, fp8 = (load_file(str(runs[n] / "final.safetensors")) for n in ("fp32", "fp8-compute"))
    assert fp8.keys() == full.keys() and fp8
    # B starts at 0: the same adapters trained (the last block's text outputs reach no loss)
    trained = {n: {k for k, v in f.items() if ".lora_B." in k and v.abs().max() > 0}
               for n, f in (("fp32", full), ("fp8", fp8))}  # fmt: skip
    assert trained["fp8"] == trained["fp32"] and len(trained["fp8"]) > len(fp8) // 4
    # measured 0.15 over all trained B (torchao's weight-only fp8: 0.11): Adam's steps, about
    # lr each whatever the gradient's size, turn small gradient differences into these; a B
    # of unrelated training would differ by ~1.4
    b_fp8, b_full = (
        torch.cat([f[k].flatten() for k in sorted(trained["fp8"])]) for f in (fp8, full)
    )
    difference = float((b_fp8 - b_full).norm() / b_full.norm())
    assert 0 < difference < 0.3, difference


@pytest.mark.slow
def test_an_fp8_compute_run_through_the_cli_prints_what_it_replaced(
    qwen_tiny: Path, images: Path, tmp_path: Path
) -> None:
    done = train_in_subprocess(qwen_tiny, images, tmp_path / "run", "--max-steps", "3",
                               "--base-precision", "fp8-compute", "--mixed-precision", "bf16")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "base precision fp8-compute: dit: 28 linear layers" in done.stdout + done.stderr
    saved = load_file(str(tmp_path / "run" / "final.safetensors"))
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)


@pytest.mark.slow
def test_block_swap_moves_the_fp8_weights_and_trains_as_without(
    qwen_tiny: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fp8 weights are frozen parameters: swap moves them, and its saved-tensor hook
    refetches what the backward of Fp8Linear needs (no checkpointing: autograd keeps it)."""
    from diffsynth_core.training import swap as swap_module

    from .conftest import losses, run_train

    moved: set[str] = set()
    original = swap_module.install_block_swap

    def spy(*args: object) -> object:
        swap = original(*args)
        moved.update(name for slots in swap.slots.values() for _, name in slots)
        return swap

    monkeypatch.setattr(swap_module, "install_block_swap", spy)
    common = dict(
        model="qwen-image", model_path=str(qwen_tiny), dataset=str(images), max_steps=3,
        base_precision="fp8-compute", cache_features=True, gradient_checkpointing=False,
    )  # fmt: skip
    swapped = run_train(**common, output=str(tmp_path / "swap"), blocks_to_swap=1)
    plain = run_train(**common, output=str(tmp_path / "plain"))
    assert {"weight_fp8", "weight_scale"} <= moved  # what Fp8Linear holds, swapped
    assert losses(swapped) == losses(plain)


def test_a_merged_lora_changes_an_fp8_compute_layer_as_it_changes_a_full_one() -> None:
    """``--merge-lora`` writes into the base weights: an Fp8Linear re-quantizes, since its
    ``weight`` is a dequantized copy (writing into it changed nothing before)."""
    from diffsynth_core.lora.inject import merge_lora

    full = torch.nn.Sequential(_layer())
    fp8 = torch.nn.Sequential(_layer())
    quantize_model(fp8, "fp8-compute")
    gen = torch.Generator().manual_seed(3)
    lora = {"0.lora_A.weight": torch.randn(4, 128, generator=gen),
            "0.lora_B.weight": torch.randn(128, 4, generator=gen)}  # fmt: skip
    x = torch.randn(8, 128, generator=gen)
    before = fp8(x)
    assert merge_lora(full, lora) == merge_lora(fp8, lora) == 1
    change, expected = fp8(x) - before, x @ (lora["0.lora_B.weight"] @ lora["0.lora_A.weight"]).t()
    assert float((change - expected).norm() / expected.norm()) < BOUND
    assert float((fp8(x) - full(x)).norm() / full(x).norm()) < BOUND
