"""``--base-precision``: the frozen base models' linear weights stored in fp8, int8 or nf4.

The weights are replaced by torchao's tensor subclasses (``Float8Tensor``, ``Int8Tensor``:
weight-only, one scale per output row; ``NF4Tensor``: QLoRA's 4-bit normal float, blocks of
64). Each is dequantized to the model's compute dtype inside the matmul, so activations,
LoRA layers (peft wraps a quantized linear layer as it wraps any other) and gradients keep the
run's precision: only the stored weights shrink. No kernel here is ours.

``fp8-compute`` is the exception: the layers become :class:`~.fp8_compute.Fp8Linear`, whose
forward and input-gradient matmuls run in fp8 (``torch._scaled_mm``; see that module for why
it is written here). Layers whose sizes are not multiples of 16 stay as they are.

Which models are quantized, and which of their layers stay in the run's precision, the family
declares (``ModelFamily.high_precision_modules``): the keys are the frozen base models, the
values the layers kept (the input projections, the timestep embedding, the final norm and
projection: the layers every token passes through once). Only ``nn.Linear`` layers are ever
quantized: norms, embeddings, convolutions and bare parameters stay as loaded.

torchao is imported on first use only, with its loader's warnings about GPU extensions that a
CPU build lacks kept out of the output (:func:`quiet_torchao_logs`).
"""

from __future__ import annotations

import logging
import math
import types
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, PluginError
from . import fp8_compute

PRECISIONS = ("bf16", "fp8", "int8", "nf4", "int4", "fp8-compute")
# weights stored in a torchao tensor subclass, or (fp8-compute) in an Fp8Linear's fp8 copies
QUANTIZED = ("fp8", "int8", "nf4", "int4", "fp8-compute")
# what an NF4 weight needs: whole blocks of 64 values and of 256 block scales (torchao's sizes)
NF4_BLOCK, NF4_SCALER_BLOCK = 64, 256
# loggers whose import-time warnings say nothing to a user: torchao's GPU extensions missing
# on a CPU build, torch's pytree deprecation notes, diffusers' optional torchao types
_NOISY_LOGGERS = (
    "torchao",
    "torch.utils._pytree",
    "diffusers.quantizers.torchao.torchao_quantizer",
)


def quiet_torchao_logs() -> None:
    """Keep torchao's import-time warnings out of the CLI's output (no import happens here)."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def peft_quiet() -> None:
    """Silence peft's note that a LoRA over a torchao layer cannot be merged in place: we never
    merge into the quantized base (files are merged into a full-precision one)."""
    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")


def check_precision_name(precision: str | None) -> None:
    """A ConfigError for a precision we do not know (the flag is free text, for this line)."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(
            f"--base-precision {precision!r} is unknown; use one of {', '.join(PRECISIONS)}"
        )


def quantized_models(family: Any) -> tuple[str, ...]:
    """The pipeline models ``family`` lets ``--base-precision`` quantize (its declared bases)."""
    return tuple(getattr(family, "high_precision_modules", {}) or {})


def check_base_precision(
    precision: str | None, family: Any, trainable_models: Iterable[str] = ()
) -> None:
    """Start-up checks that need no model: a known precision, a family that declares its base
    models, and no fully trained model stored quantized (its updates would round away)."""
    check_precision_name(precision)
    if precision not in QUANTIZED:
        return
    bases = quantized_models(family)
    if not bases:
        raise ConfigError(
            f"--base-precision {precision}: family {family.name!r} declares no base models to "
            "quantize (ModelFamily.high_precision_modules); leave the option out for it"
        )
    trained = [name for name in trainable_models if name in bases]
    if trained:
        raise ConfigError(
            f"--base-precision {precision} stores {', '.join(trained)} quantized, and "
            f"--trainable-models trains it fully: train a LoRA on it instead, or leave "
            "--base-precision out"
        )


def _kept(name: str, keep: Iterable[str]) -> bool:
    """``name`` is a kept module or inside one (kept names are paths from the model's root:
    ``proj_out`` is the final projection, not every block's ``proj_out``)."""
    return any(name == entry or name.startswith(entry + ".") for entry in keep)


def _torchao_config(precision: str) -> Any:
    quiet_torchao_logs()
    from torchao.quantization import (
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
    )

    # set_inductor_config=False: quantizing must not change torch.compile's global settings
    if precision == "fp8":
        return Float8WeightOnlyConfig(set_inductor_config=False)
    if precision == "int8":
        return Int8WeightOnlyConfig(set_inductor_config=False)
    return Int4WeightOnlyConfig(group_size=128, set_inductor_config=False)


def _nf4_fits(layer: torch.nn.Linear) -> bool:
    return layer.weight.numel() % NF4_BLOCK == 0


def _nf4_scaler_block(weight: torch.Tensor) -> int:
    # torchao quantizes the block scales in groups that must divide the number of blocks:
    # 256 at every real width, fewer for a tiny layer
    return math.gcd(weight.numel() // NF4_BLOCK, NF4_SCALER_BLOCK)


def quantize_model(
    model: torch.nn.Module,
    precision: str,
    keep: Iterable[str] = (),
    trained: Iterable[torch.nn.Module] = (),
) -> list[str]:
    """Store ``model``'s linear weights in ``precision``; the names of the layers done.

    Left as they are: the layers under a ``keep`` path, and the ``trained`` ones (the layers of
    a model trained fully that shares them, as Wan's VACE branch shares the DiT's blocks)."""
    keep, skipped = tuple(keep), {id(layer) for layer in trained}
    names = [
        name
        for name, layer in model.named_modules()
        if isinstance(layer, torch.nn.Linear)
        and id(layer) not in skipped
        and not _kept(name, keep)
        and (precision != "nf4" or _nf4_fits(layer))
        and (precision != "fp8-compute" or fp8_compute.fits(layer))
    ]
    if precision == "bf16":
        for name in names:
            model.get_submodule(name).to(torch.bfloat16)
        return names
    if precision == "nf4":
        quiet_torchao_logs()
        from torchao.quantization import to_nf4

        for name in names:
            layer = model.get_submodule(name)
            assert isinstance(layer, torch.nn.Linear)  # chosen above as one
            weight = to_nf4(layer.weight.detach(), NF4_BLOCK, _nf4_scaler_block(layer.weight))
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
        return names
    if precision == "fp8-compute":
        return fp8_compute.to_fp8_compute(model, names)
    from torchao.quantization import quantize_

    chosen = set(names)
    config = _torchao_config(precision)
    quantize_(model, config, filter_fn=lambda _module, fqn: fqn in chosen)
    for name in names:
        layer = model.get_submodule(name)
        layer.forward = types.MethodType(_frozen_quantized_forward, layer)
    return names


class _FrozenQuantizedLinear(torch.autograd.Function):
    """``F.linear`` over a frozen torchao-quantized weight that keeps only that weight for
    backward.

    Written by hand because torchao has no such option: its weight-only fp8/int8 linear
    dequantizes the weight to bf16 inside the product, and autograd keeps that bf16 copy until
    the layer's backward (measured with saved-tensor hooks): a block's worth of bf16 weights
    under gradient checkpointing, a bf16 copy of every quantized layer without it -- most of
    what storing the base in 8 bits saves. Here the forward is torchao's own call (the same
    output, bit for bit), and backward dequantizes the weight again, one layer at a time. The
    weight is frozen, so only the input's gradient is computed."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)  # the quantized tensor itself: no copy
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (weight,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return grad @ weight.dequantize().to(grad.dtype), None, None


def _frozen_quantized_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    result: torch.Tensor = _FrozenQuantizedLinear.apply(x, self.weight, self.bias)
    return result


def check_device_runs(precision: str | None, device: str | torch.device) -> None:
    """Quantize a small linear layer on ``device`` and run forward and backward through it: a
    precision without a kernel here is one ConfigError now, not a crash mid-run."""
    if precision not in QUANTIZED:
        return
    device = torch.device(device)
    try:
        # the run is seeded already: the probe's random numbers must not shift its draws
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            layer = torch.nn.Sequential(torch.nn.Linear(256, 256)).to(device)
            quantize_model(layer, precision)
            probe = torch.randn(2, 256, device=device, requires_grad=True)
            layer(probe).sum().backward()
    except Exception as exc:  # any failure of the library here means: not on this device
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"--base-precision {precision} cannot run on {device} ({reason}); "
            f"use fp8, int8 or nf4 there"
        ) from exc


@dataclass(frozen=True)
class Quantized:
    """What :func:`apply_base_precision` did to one model: layers stored quantized, and the
    bytes of the model's weights before and after."""

    model: str
    layers: int
    bytes_before: int
    bytes_after: int


def apply_base_precision(
    pipe: Any,
    precision: str | None,
    models: Iterable[str] | None = None,
    keep: Mapping[str, Iterable[str]] | None = None,
    trainable_models: Iterable[str] = (),
) -> list[Quantized]:
    """Store the frozen base models of ``pipe`` in ``precision`` (None: leave them as loaded).

    ``models`` defaults to those the family declares; a model the pipeline has not loaded
    (``None``, as the text encoder of a cached run) is skipped. ``keep`` (model -> layer names)
    defaults to the family's ``high_precision_modules``. Call it before LoRA is injected:
    peft then wraps the quantized layers. The layers of ``trainable_models`` (trained fully)
    stay as they are. ``diffsynth cache`` calls it with ``models=("text_encoder",)``.
    """
    check_precision_name(precision)
    if precision is None:
        return []
    family = getattr(pipe, "family", None)
    declared = dict(getattr(family, "high_precision_modules", {}) or {})
    keep = dict(declared if keep is None else keep)
    trained = [
        layer
        for name in trainable_models
        if isinstance(getattr(pipe, name, None), torch.nn.Module)
        for layer in getattr(pipe, name).modules()
    ]
    done = []
    for name in models if models is not None else declared:
        model = getattr(pipe, name, None)
        if not isinstance(model, torch.nn.Module):
            continue
        _check_paths(model, name, keep.get(name, ()), family)
        before = weight_bytes(model)
        layers = quantize_model(model, precision, keep.get(name, ()), trained)
        done.append(Quantized(name, len(layers), before, weight_bytes(model)))
    return done


def _check_paths(model: torch.nn.Module, name: str, keep: Iterable[str], family: Any) -> None:
    """A kept path the loaded model lacks would quietly quantize the layer it meant."""
    modules = dict(model.named_modules())
    missing = [path for path in keep if path not in modules]
    if missing:
        owner = getattr(family, "name", "the family")
        raise PluginError(
            f"{owner}: high_precision_modules names {name}.{missing[0]}, which the loaded "
            f"{type(model).__name__} does not have (a plugin bug: the kept layers' paths start "
            "at the model's root)"
        )


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: a torchao subclass counts its inner tensors (data and scales)."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is None or type(tensor) in (torch.Tensor, torch.nn.Parameter):
        return tensor.numel() * tensor.element_size()
    inner, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]  # subclass protocol
    return sum(tensor_bytes(getattr(tensor, part)) for part in inner)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers as stored (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


def describe(done: list[Quantized], precision: str | None) -> str:
    """One line for the start-up summary: what was stored quantized and what it saved."""
    if not done:
        return ""
    parts = [
        f"{q.model}: {q.layers} linear layers, {q.bytes_before / 2**20:.1f} -> "
        f"{q.bytes_after / 2**20:.1f} MiB"
        for q in done
    ]
    return f"base precision {precision}: " + "; ".join(parts)
