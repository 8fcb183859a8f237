"""``--base-precision fp8-compute``: the frozen base's linear layers multiply in fp8.

``--base-precision fp8`` (torchao's weight-only fp8) stores the weights in fp8 but dequantizes
them to bf16 inside every matmul: it saves memory, not compute. Here both matrix products a
frozen linear layer takes part in run as fp8 x fp8 ``torch._scaled_mm`` calls, on one fp8
copy of ``W`` (out x in, e4m3, one fp32 scale ``s`` per output row: the bytes of torchao's fp8):

* forward, ``y = x @ W^T``: ``x`` quantized per token (one scale per row); the token scales
  and ``s`` apply to the product's rows and columns after the matmul;
* backward, ``grad_x = g @ W = (g * s) @ W_fp8``: ``s`` lies along the contracted axis here,
  so it is folded into ``g`` before ``g`` is quantized per token, and ``W_fp8`` needs no scale.
  ``_scaled_mm`` wants its second operand column-major, which for ``W`` is ``W^T`` stored
  row-major: one transposed fp8 copy of the layer, made in backward and freed after it (a
  temporary of one byte per weight, one layer at a time). A second, per-column quantized copy
  kept for backward would double the stored bytes (to those of bf16) and measured no more
  accurate (relative error of ``g @ W`` 3.5% either way, rows and columns of ``W`` 100x apart).

No weight gradient is ever computed (the base is frozen: a third of a trained layer's matmul
work), so nothing of the input is saved for backward either: only the layer's own fp8 weight.

Why by hand: no maintained library does "fp8 forward and fp8 input gradient, no weight
gradient" for a frozen layer. torchao's ``Float8DynamicActivationFloat8WeightConfig`` is an
inference config (no backward through its matmul) and needs CUDA >= 8.9; torchao's
``torchao.float8`` training (``Float8Linear``) always computes the weight gradient and saves
the high-precision input. ``torch._scaled_mm`` itself is torch's (it runs on the CPU too).

Gradients are quantized to e4m3, not the usual e5m2: with one scale per row the range of
e5m2 buys nothing, and e4m3's extra mantissa bit halves the error (measured on random
data: relative error of ``g @ W`` 3.7% with e4m3, 5.9% with e5m2). CUDA's rowwise kernel
takes e4m3 x e4m3 (its second operand must be e4m3 in any case).

The layer is an ``nn.Linear`` subclass, so peft wraps it as any linear layer (its LoRA
forward calls the base layer, then adds the adapter). The fp8 weight and its scales are
frozen ``Parameter`` s rather than buffers so that ``--blocks-to-swap`` (which moves a block's
frozen parameters) moves them too; ``weight`` is a read-only property that dequantizes them,
for code that reads a linear layer's weight (peft's dtype and device, DoRA's norm).
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
# _scaled_mm's rule (CUDA): both dimensions of the weight a multiple of 16
MULTIPLE = 16
# an all-zero row (a padded token, a zero gradient) gets this scale, not 0 (0 / 0 is NaN)
MIN_AMAX = 1e-12


def quantize_rows(
    tensor: torch.Tensor, columns: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``tensor`` (2-D; times ``columns``, 1 x its width, if given) in e4m3 with one fp32 scale
    per row: ``q * scale`` is that product."""
    # computed in the tensor's dtype, or fp32 for fp16 (whose range a scale can leave): the
    # temporary is one copy of the tensor, and bf16's 8 mantissa bits round finer than
    # e4m3's 3 (the clamp catches a bf16-rounded scale's 448.x)
    dtype = torch.promote_types(tensor.dtype, torch.bfloat16)
    values = tensor.detach().to(dtype)
    if columns is not None:
        values = values * columns.to(dtype)
    amax = values.abs().amax(dim=1, keepdim=True).float()
    scale = amax.clamp(min=MIN_AMAX) / FP8_MAX
    data = (values / scale.to(dtype)).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
    return data, scale


def fits(layer: torch.nn.Linear) -> bool:
    """``_scaled_mm`` can multiply by this layer's weight (both sizes multiples of 16)."""
    out_features, in_features = layer.weight.shape
    return out_features % MULTIPLE == 0 and in_features % MULTIPLE == 0


def _scaled_mm(
    a: torch.Tensor, scale_a: torch.Tensor, b_t: torch.Tensor, scale_b: torch.Tensor
) -> torch.Tensor:
    """``(a * scale_a) @ (b_t * scale_b^T)^T`` in bf16: ``a`` row-major (M x K) with its
    scales M x 1; ``b_t`` the second operand's transpose (N x K, row-major, so ``b_t.t()`` is
    the column-major operand _scaled_mm wants) with its scales 1 x N."""
    return torch._scaled_mm(a, b_t.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)


class _Fp8Matmul(torch.autograd.Function):
    """``x @ W^T`` in fp8; backward returns the input's gradient only, also in fp8."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        weight_scale: torch.Tensor,
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # a copy only when x is not contiguous
        data, scale = quantize_rows(rows)
        out = _scaled_mm(data, scale, weight, weight_scale)
        # the layer's own tensors only (references: no new memory), nothing of x
        ctx.save_for_backward(weight, weight_scale)
        ctx.dtype = x.dtype  # type: ignore[attr-defined]  # ctx takes any attribute
        return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        weight, weight_scale = ctx.saved_tensors  # type: ignore[attr-defined]
        rows = grad.reshape(-1, grad.shape[-1])
        data, scale = quantize_rows(rows, columns=weight_scale)  # g * s, per token
        ones = torch.ones(1, weight.shape[1], device=weight.device)  # s is folded into g
        # W^T stored row-major is W column-major: the layout _scaled_mm's operand needs
        grad_x = _scaled_mm(data, scale, weight.t().contiguous(), ones)
        dtype = ctx.dtype  # type: ignore[attr-defined]
        return grad_x.to(dtype).reshape(*grad.shape[:-1], weight.shape[1]), None, None


class Fp8Linear(torch.nn.Linear):
    """A frozen linear layer whose matmuls run in fp8 (see the module docstring).

    ``weight_fp8`` is ``W`` (out x in, e4m3) and ``weight_scale`` its scales (1 x out, fp32),
    both frozen parameters. The bias, if any, stays as it was and is added in the output's
    dtype."""

    def __init__(self, layer: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)  # not Linear's: it would allocate a weight
        self.in_features, self.out_features = layer.in_features, layer.out_features
        weight = layer.weight.detach()
        self.compute_dtype = weight.dtype  # what ``weight`` dequantizes to
        data, scale = quantize_rows(weight)
        self.weight_fp8 = _frozen(data)
        self.weight_scale = _frozen(scale.t().contiguous())
        self.bias = layer.bias

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]  # Linear's is a Parameter
        """``W`` dequantized (a new tensor on every read: no one trains it)."""
        return (self.weight_fp8.float() * self.weight_scale.t()).to(self.compute_dtype)

    def requantize(self, weight: torch.Tensor) -> None:
        """Store ``weight`` (out x in) instead: how a LoRA is merged into the layer
        (``--merge-lora``; writing into what ``weight`` returns would change a copy)."""
        data, scale = quantize_rows(weight.detach().to(self.weight_fp8.device))
        self.weight_fp8.data, self.weight_scale.data = data, scale.t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _Fp8Matmul.apply(x, self.weight_fp8, self.weight_scale)
        assert isinstance(out, torch.Tensor)  # apply is typed as Any
        return out if self.bias is None else out + self.bias.to(out.dtype)


def _frozen(tensor: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(tensor, requires_grad=False)


def to_fp8_compute(model: torch.nn.Module, names: list[str]) -> list[str]:
    """Replace the linear layers ``names`` of ``model`` by :class:`Fp8Linear` where
    ``_scaled_mm`` fits them; the names replaced (the others stay as they were)."""
    done = []
    for name in names:
        layer = model.get_submodule(name)
        # the root itself cannot be replaced in place (check_device_runs wraps its probe)
        if not name or not isinstance(layer, torch.nn.Linear) or not fits(layer):
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, Fp8Linear(layer))
        done.append(name)
    return done
