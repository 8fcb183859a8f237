"""The predicted peak GPU memory of one training step, by category.

How: the trained model is built at real width with one and with two repeating units of
blocks inside a FakeTensorMode, and one step (forward, backward, optimizer) of each runs
under torch's MemTracker (:mod:`.fake`). Every category is linear in the number of units
(each unit adds its weights, their LoRA, gradients and optimizer states, and what its blocks
keep for backward), so the two runs give each category at the real depth. bench/estimate_cpu.py
checks that against real tensors.

The settings that do not change the traced step are applied by their analytic amount:
``base_precision`` fp8/int8 (each quantized Linear weight of the blocks takes 1 byte plus a
4-byte scale per output row, and one layer's weight is dequantized at a time, in forward and
again in backward: a temporary;
fp8-compute stores the same, and its temporary is one layer's transposed fp8 weight),
``blocks_to_swap`` (the GPU holds the other blocks and ~2 in flight), ``cache`` (without it
the frozen text encoder and VAE weights are on the GPU, and the VAE encode's activations
peak before the step), ``gradient_checkpointing_offload`` (the block inputs checkpointing
keeps go to the CPU, so activations stop growing with depth) and 8-bit optimizers (2 bytes
of state per parameter instead of AdamW's 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import ConfigError
from .fake import default_dtype, fake_world, tracked_forward, tracked_step
from .spec import RealSize, Shape

PRECISIONS = ("bf16", "fp8", "int8", "nf4", "fp8-compute")
# bytes per quantized Linear weight, scales aside (fp8/int8 add one fp32 scale per row; nf4's
# 0.5157 includes its block scales: torchao's NF4Tensor, measured by the quantization tests;
# fp8-compute: Fp8Linear's e4m3 weight and a scale per row, as fp8)
QUANT_BYTES = {"fp8": 1.0, "int8": 1.0, "nf4": 0.5157, "fp8-compute": 1.0}
GiB = 2**30


@dataclass(frozen=True)
class MemorySettings:
    """The settings the estimate models (names as the ``diffsynth train`` settings)."""

    shape: Shape
    base_precision: str = "bf16"
    blocks_to_swap: int = 0
    cache: bool = False
    gradient_checkpointing: bool = True
    gradient_checkpointing_offload: bool = False
    lora_base_model: str | None = "dit"
    lora_target_modules: str = ""
    lora_rank: int = 32
    trainable_models: str = ""
    mixed_precision: str = "bf16"
    optimizer: str = "AdamW"

    def but(self, **changes: Any) -> MemorySettings:
        return replace(self, **changes)

    @property
    def weight_bytes(self) -> int:
        return 4 if self.mixed_precision == "no" else 2

    @property
    def eight_bit_optimizer(self) -> bool:
        return "8bit" in self.optimizer.lower()


@dataclass(frozen=True)
class Estimate:
    """Predicted peak bytes by category; ``peak`` is their sum."""

    settings: MemorySettings
    base_weights: int
    encoders: int
    trainable: int  # trainable weights + gradients + optimizer states
    activations: int
    temporaries: int
    details: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def peak(self) -> int:
        return (
            self.base_weights + self.encoders + self.trainable + self.activations + self.temporaries
        )

    def categories(self) -> dict[str, int]:
        return {
            "base weights": self.base_weights,
            "encoders": self.encoders,
            "trainable": self.trainable,
            "activations": self.activations,
            "temporaries": self.temporaries,
        }


@dataclass(frozen=True)
class _Run:
    """One traced step: MemTracker's peak by category and the model's weights by kind."""

    peak: dict[str, int]
    sizes: dict[str, int]


class Estimator:
    """Estimates for one family's real-size model; traced steps are reused across settings
    (the cheapest-fit search asks for many)."""

    def __init__(self, spec: RealSize, block_lists: tuple[str, ...]) -> None:
        self.spec = spec
        self.block_lists = block_lists
        self._runs: dict[tuple[Any, ...], _Run] = {}
        self._encodes: dict[tuple[Any, ...], int] = {}

    def estimate(self, s: MemorySettings) -> Estimate:
        """The predicted peak of one training step with settings ``s``."""
        self._check(s)
        one, two = self._run(s, 1), self._run(s, 2)
        units = self.spec.units

        def at(kind: str, name: str) -> int:
            first, second = getattr(one, kind)[name], getattr(two, kind)[name]
            return first + (second - first) * (units - 1)

        sizes = {name: at("sizes", name) for name in one.sizes}
        trainable_weights = sizes["trainable"]
        base = at("peak", "params") + at("peak", "buffers") - trainable_weights
        quant_saving = 0
        temporaries = at("peak", "temporaries")
        if s.base_precision != "bf16":
            rows = sizes["quantized_rows"] * 4 if s.base_precision != "nf4" else 0
            per_weight = QUANT_BYTES[s.base_precision]
            quant_saving = int(sizes["quantized"] * (s.weight_bytes - per_weight) - rows)
            # one dequantized weight at a time (training/quantize.py keeps no bf16 copy for
            # backward); fp8-compute: one transposed fp8 weight (backward)
            temporary = 1 if s.base_precision == "fp8-compute" else 2
            temporaries += one.sizes["largest_linear"] * temporary
        per_block = (sizes["block_weights"] - quant_saving) / self.spec.num_blocks
        swap_saving = int(max(0, min(s.blocks_to_swap, self.spec.num_blocks) - 2) * per_block)
        optimizer = at("peak", "optimizer") // (4 if s.eight_bit_optimizer else 1)
        grads = at("peak", "grads")
        activations = one.peak["activations"] if _offloads(s) else at("peak", "activations")
        notes = list(self._notes(s))
        encoders = 0
        if not s.cache:
            encoders = int(sum(self.spec.frozen.values()) * s.weight_bytes)
            encode = self._encode(s)
            if encode > activations + temporaries:
                notes.append("the VAE encode before the step is the peak of the dynamic memory")
                activations, temporaries = encode, 0
        details = {
            "trainable_weights": trainable_weights, "gradients": grads, "optimizer_states": optimizer,
            "base_params": sizes["base_params"], "quantization_saving": quant_saving,
            "swap_saving": swap_saving, "math_attention_extra": self._math_attention(s),
        }  # fmt: skip
        return Estimate(
            s, base - quant_saving - swap_saving, encoders, trainable_weights + grads + optimizer,
            activations, temporaries, details, tuple(notes),
        )  # fmt: skip

    def _check(self, s: MemorySettings) -> None:
        if s.base_precision not in PRECISIONS:
            raise ConfigError(
                f"--base-precision must be one of {', '.join(PRECISIONS)}, not {s.base_precision!r}"
            )
        if not 0 <= s.blocks_to_swap < self.spec.num_blocks:
            raise ConfigError(
                f"--blocks-to-swap {s.blocks_to_swap}: the model has {self.spec.num_blocks} blocks; "
                f"give 0 to {self.spec.num_blocks - 1}"
            )
        full = [m for m in s.trainable_models.split(",") if m.strip()]
        if any(m.strip() != self.spec.model for m in full):
            raise ConfigError(
                f"the memory estimate models training of {self.spec.model!r} only, not --trainable-models {s.trainable_models}"
            )
        if not full and s.lora_base_model not in (self.spec.model, *self.spec.views):
            raise ConfigError(
                f"the memory estimate models LoRA on {self.spec.model!r} (or {', '.join(self.spec.views) or 'no part of it'}), not {s.lora_base_model!r}"
            )

    def _notes(self, s: MemorySettings) -> list[str]:
        notes = []
        if s.eight_bit_optimizer:
            notes.append(f"{s.optimizer}: 2 bytes of state per trained parameter")
        elif s.optimizer not in ("AdamW", "Adam", "SGD"):
            notes.append(f"{s.optimizer}: counted as AdamW (8 bytes of state per parameter)")
        return notes

    def _run(self, s: MemorySettings, units: int) -> _Run:
        """The traced step of the settings that change it (cached)."""
        key = (units, s.shape, s.gradient_checkpointing, s.lora_base_model, s.lora_target_modules,
               s.lora_rank, s.trainable_models, s.weight_bytes, s.optimizer == "SGD")  # fmt: skip
        if key not in self._runs:
            self._runs[key] = self._trace(s, units)
        return self._runs[key]

    def _trace(self, s: MemorySettings, units: int) -> _Run:
        from ..training.module import set_gradient_checkpointing

        dtype = torch.float32 if s.weight_bytes == 4 else torch.bfloat16
        with fake_world():
            model = self.build_model(s, units, dtype)
            set_gradient_checkpointing(model, s.gradient_checkpointing)
            sizes = self._sizes(model)
            inputs = self.spec.inputs(model, s.shape, dtype)
            peak = tracked_step(
                model, inputs, s.optimizer, None if dtype == torch.float32 else dtype
            )
        return _Run(peak, sizes)

    def build_model(self, s: MemorySettings, units: int, dtype: torch.dtype) -> torch.nn.Module:
        from ..lora.inject import inject_lora

        with default_dtype(dtype):
            model = self.spec.build(units)
            model.requires_grad_(False)
            if s.trainable_models.strip():
                model.float().requires_grad_(
                    True
                )  # trained weights stay fp32 (as cli/run/build.py)
            else:
                view = self.spec.views.get(s.lora_base_model or "")
                inject_lora(
                    model.get_submodule(view) if view else model, s.lora_target_modules, s.lora_rank
                )
        return model

    def _sizes(self, model: torch.nn.Module) -> dict[str, int]:
        """Bytes of trainable and of frozen block weights; numel of the Linear base weights
        inside the blocks (what fp8/int8 quantizes) and their output rows (one scale each)."""
        blocks = [model.get_submodule(name) for name in self.block_lists]
        linears = [m for b in blocks for n, m in b.named_modules()
                   if isinstance(m, torch.nn.Linear) and "lora_" not in n]  # fmt: skip
        return {
            "trainable": sum(p.nbytes for p in model.parameters() if p.requires_grad),
            "base_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n),
            "block_weights": sum(
                p.nbytes for b in blocks for p in b.parameters() if not p.requires_grad
            ),
            "quantized": sum(m.weight.numel() for m in linears if not m.weight.requires_grad),
            "quantized_rows": sum(m.out_features for m in linears if not m.weight.requires_grad),
            "largest_linear": max((m.weight.numel() for m in linears), default=0),
        }

    def _encode(self, s: MemorySettings) -> int:
        if self.spec.encode is None:
            return 0
        key = (s.shape, s.weight_bytes)
        if key not in self._encodes:
            dtype = torch.float32 if s.weight_bytes == 4 else torch.bfloat16
            with fake_world(), default_dtype(dtype):
                vae, run = self.spec.encode(s.shape, dtype)
                self._encodes[key] = tracked_forward(vae, run)
        return self._encodes[key]

    def _math_attention(self, s: MemorySettings) -> int:
        """What a math attention kernel (the CPU's) keeps beyond a flash kernel: the
        softmaxed scores of every layer (of one layer at a time under checkpointing)."""
        if self.spec.attention is None:
            return 0
        heads, tokens, layers = self.spec.attention(s.shape)
        kept = 2 if s.gradient_checkpointing else layers
        return s.shape.batch_size * heads * tokens * tokens * s.weight_bytes * kept


def _offloads(s: MemorySettings) -> bool:
    return s.gradient_checkpointing and s.gradient_checkpointing_offload
