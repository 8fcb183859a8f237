"""The estimate: close to the measured CPU peak, categories that add up, and each analytic
setting moving its own category by its own amount."""

from __future__ import annotations

import pytest

from diffsynth_core.memory.estimate import Estimator, MemorySettings
from diffsynth_core.memory.validate import estimated_peak, measured_peak


def test_estimate_is_within_15_percent_of_the_measured_cpu_peak(
    estimator: Estimator, lora: MemorySettings
) -> None:
    # fake traces of 1 and 2 blocks, scaled to 3, against a real 3-block step on the CPU
    measured = measured_peak(estimator, lora, 3)
    estimated = estimated_peak(estimator, lora, 3)
    assert abs(estimated - measured) <= 0.15 * measured, (estimated, measured)


def test_categories_add_up_to_the_peak(estimator: Estimator, lora: MemorySettings) -> None:
    estimate = estimator.estimate(lora.but(cache=False))
    parts = estimate.categories()
    assert sum(parts.values()) == estimate.peak
    assert all(value > 0 for value in parts.values()), parts
    d = estimate.details
    assert estimate.trainable == d["trainable_weights"] + d["gradients"] + d["optimizer_states"]


def test_fp8_and_int8_shrink_the_base_weights_by_one_byte_per_quantized_weight(
    estimator: Estimator, lora: MemorySettings
) -> None:
    bf16 = estimator.estimate(lora)
    run = estimator._run(lora, 1)
    quantized = run.sizes["quantized"] * estimator.spec.units  # every Linear is in a block
    rows = run.sizes["quantized_rows"] * estimator.spec.units
    for precision in ("fp8", "int8"):
        low = estimator.estimate(lora.but(base_precision=precision))
        assert bf16.base_weights - low.base_weights == quantized * (2 - 1) - rows * 4
        # one layer's weight is dequantized at a time (in forward, and again in backward)
        assert low.temporaries - bf16.temporaries == run.sizes["largest_linear"] * 2
        assert (low.trainable, low.activations, low.encoders) == (
            bf16.trainable,
            bf16.activations,
            bf16.encoders,
        )


def test_a_weight_only_quantized_linear_keeps_no_bf16_copy_for_backward() -> None:
    """torchao's fp8/int8 linear keeps the bf16 weight it dequantized until backward (a
    block's worth under checkpointing); ours (quantize.py) keeps the quantized weight only and
    dequantizes again in backward, with torchao's forward unchanged and the same gradient."""
    import torch

    from diffsynth_core.training import quantize

    def fresh_bf16_saved(layer: torch.nn.Module, probe: torch.Tensor) -> int:
        fresh: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            if not isinstance(t, torch.nn.Parameter) and t.dtype == torch.bfloat16 and t.dim() == 2:
                fresh.append(t.numel() * 2)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(probe)
        return sum(fresh)

    for precision in ("fp8", "int8"):
        torch.manual_seed(0)
        layer = torch.nn.Sequential(torch.nn.Linear(256, 256)).to(torch.bfloat16)
        quantize.quantize_model(layer, precision)
        layer.requires_grad_(False)
        probe = torch.randn(4, 256, dtype=torch.bfloat16, requires_grad=True)
        assert fresh_bf16_saved(layer, probe) == 0
        ours = layer(probe)
        ours.square().sum().backward()
        grad, probe.grad = probe.grad, None
        plain = torch.nn.Linear.forward(layer[0], probe)  # torchao's own path
        assert torch.equal(ours, plain)
        plain.square().sum().backward()
        assert probe.grad is not None and grad is not None
        assert (grad.float() - probe.grad.float()).abs().max() <= 1e-2 * probe.grad.float().abs().max()


def test_fp8_compute_stores_as_fp8_and_transposes_one_fp8_weight_at_a_time(
    estimator: Estimator, lora: MemorySettings
) -> None:
    fp8 = estimator.estimate(lora.but(base_precision="fp8"))
    compute = estimator.estimate(lora.but(base_precision="fp8-compute"))
    assert compute.base_weights == fp8.base_weights  # 1 byte per weight, a scale per row
    # its backward's transposed fp8 copy (1 byte per weight) instead of a dequantized one
    largest = estimator._run(lora, 1).sizes["largest_linear"]
    assert fp8.temporaries - compute.temporaries == largest * (2 - 1)
    assert compute.activations == fp8.activations


def test_block_swap_keeps_the_rest_and_two_blocks_in_flight(
    estimator: Estimator, lora: MemorySettings
) -> None:
    none = estimator.estimate(lora)
    per_block = estimator._run(lora, 1).sizes["block_weights"]  # one block per unit here
    assert estimator.estimate(lora.but(blocks_to_swap=2)).base_weights == none.base_weights
    three = estimator.estimate(lora.but(blocks_to_swap=3))
    assert none.base_weights - three.base_weights == per_block
    assert three.peak == none.peak - per_block
    with pytest.raises(Exception, match="4 blocks"):
        estimator.estimate(lora.but(blocks_to_swap=4))


def test_no_cache_adds_the_frozen_encoders_and_the_vae_encode(
    estimator: Estimator, lora: MemorySettings
) -> None:
    cached = estimator.estimate(lora)
    loaded = estimator.estimate(lora.but(cache=False))
    assert cached.encoders == 0
    assert loaded.encoders == int(51e6 * 2)  # text encoder + VAE weights in bf16
    assert loaded.base_weights == cached.base_weights and loaded.trainable == cached.trainable
    encode = estimator._encode(lora)
    assert encode > 0
    assert loaded.activations + loaded.temporaries == max(
        cached.activations + cached.temporaries, encode
    )


def test_checkpointing_and_its_offload_lower_the_activations(
    estimator: Estimator, lora: MemorySettings
) -> None:
    on = estimator.estimate(lora)
    off = estimator.estimate(lora.but(gradient_checkpointing=False))
    offload = estimator.estimate(lora.but(gradient_checkpointing_offload=True))
    assert off.activations > on.activations > offload.activations
    assert offload.activations == estimator._run(lora, 1).peak["activations"]  # depth-independent
    assert off.base_weights == on.base_weights
    assert off.details["trainable_weights"] == on.details["trainable_weights"]


def test_an_8bit_optimizer_keeps_a_quarter_of_adamws_states(
    estimator: Estimator, lora: MemorySettings
) -> None:
    adamw = estimator.estimate(lora)
    eight = estimator.estimate(lora.but(optimizer="bitsandbytes.optim.AdamW8bit"))
    states = adamw.details["optimizer_states"]
    weights = adamw.details["trainable_weights"]
    assert 2 * weights <= states <= 2 * weights + 4096  # two fp32 states per weight (+ step counts)
    assert eight.details["optimizer_states"] == states // 4
    assert adamw.trainable - eight.trainable == states - states // 4
