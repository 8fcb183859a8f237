"""One training step under torch's memory tracker, on fake or on real tensors.

:func:`fake_world` is the ``FakeTensorMode`` the estimate builds and runs the models in:
tensors have shapes and dtypes and no storage, so nothing is allocated or downloaded.
:func:`tracked_step` runs forward, backward and the optimizer step of a model under
``torch.distributed._tools.mem_tracker.MemTracker`` and returns the peak by category; the
CPU validation (bench/estimate_cpu.py, tests/memory) runs the same function on real tensors.

Attention is counted as a flash kernel (no N x N scores kept), as the GPU's flash / memory-
efficient SDPA paths run it: :func:`flash_attention` routes ``scaled_dot_product_attention``
to PyTorch's CPU flash kernel, which keeps what the GPU kernels keep (output and log-sum-exp).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch.distributed._tools.mem_tracker import _TOTAL_KEY as _TOTAL
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

CATEGORIES = ("params", "buffers", "grads", "activations", "temporaries", "optimizer")
_BY_REF: dict[Any, str] = {  # snapshot keys are _MemRefType (typed as str by torch)
    _MemRefType.PARAM: "params",
    _MemRefType.BUFFER: "buffers",
    _MemRefType.GRAD: "grads",
    _MemRefType.ACT: "activations",
    _MemRefType.TEMP: "temporaries",
    _MemRefType.OPT: "optimizer",
    _MemRefType.OTH: "temporaries",
}


class _Tracker(MemTracker):
    """MemTracker that hooks gradients of trainable parameters only: torch 2.13's tracker
    registers a gradient hook on every parameter, which a frozen base weight refuses."""

    def _track_module_params_and_buffers(
        self, module: torch.nn.Module, install_grad_hooks: bool = True
    ) -> tuple[int, int]:
        memory = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
        if install_grad_hooks:
            for param in module.parameters():
                if param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:
                    self._param_to_grad_hook_handles[param] = (
                        param.register_hook(self._grad),
                        param.register_post_accumulate_grad_hook(lambda p: self._grad(p.grad)),
                    )
        return memory

    def _update_peak_stats(self, peak_state: Any) -> None:
        # Only the global peak is read; the per-module peaks the base class also updates on
        # every allocation cost time in proportion to the number of modules.
        for dev, dev_snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < dev_snap[_TOTAL]:
                self._peak_mem[dev] = dev_snap[_TOTAL]
                self._peak_mem_snap[dev] = dict(dev_snap)

    def _grad(self, grad: torch.Tensor | None) -> None:
        if grad is not None:
            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)


def _apply_without_swap(self: torch.nn.Module, fn: Callable[..., Any], recurse: bool = True) -> Any:
    # Module.to/.float swap a fake parameter in place (torch.utils.swap_tensors), which the
    # fake mode's own weak references refuse; a new Parameter is the same module to us.
    if recurse:
        for child in self.children():
            child._apply(fn)
    for key, param in self._parameters.items():
        if param is not None:
            with torch.no_grad():
                new = fn(param)
            if new is not param:
                self._parameters[key] = torch.nn.Parameter(new, requires_grad=param.requires_grad)
    for key, buffer in self._buffers.items():
        if buffer is not None:
            self._buffers[key] = fn(buffer)
    return self


def _flash_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    dtype = query.dtype
    mask = (
        None
        if attn_mask is None
        else attn_mask.to(dtype)
        if attn_mask.is_floating_point()
        else (torch.zeros((), dtype=dtype).masked_fill(~attn_mask, float("-inf")))
    )
    out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key.to(dtype), value.to(dtype), dropout_p, is_causal, attn_mask=mask, scale=scale
    )
    return out


@contextmanager
def flash_attention() -> Iterator[None]:
    """``F.scaled_dot_product_attention`` as a flash kernel (what the GPU runs), not the
    CPU's math path that materialises the N x N scores."""
    original = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _flash_sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


@contextmanager
def fake_world() -> Iterator[Any]:
    """A FakeTensorMode to build and run models in (no storage allocated)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    original = torch.nn.Module._apply
    torch.nn.Module._apply = _apply_without_swap  # type: ignore[method-assign]
    try:
        with FakeTensorMode() as mode:
            yield mode
    finally:
        torch.nn.Module._apply = original  # type: ignore[method-assign]


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Modules built meanwhile get weights of ``dtype`` (as loading them in it would)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def make_optimizer(name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer whose states stand for ``name``'s: AdamW/Adam/SGD as themselves,
    anything else as AdamW (the estimate scales 8-bit states afterwards)."""
    if name == "SGD":
        return torch.optim.SGD(params, lr=1e-4)
    if name == "Adam":
        return torch.optim.Adam(params, lr=1e-4)
    return torch.optim.AdamW(params, lr=1e-4)


def _warm(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    # the states exist from the first step on: measure a step after it
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) or hasattr(output, "values"):
        return _first_tensor(next(iter(output.values())))
    return _first_tensor(output[0])


def tracked_step(
    model: torch.nn.Module, inputs: dict[str, Any], optimizer: str, autocast: torch.dtype | None
) -> dict[str, int]:
    """Peak bytes by category (:data:`CATEGORIES`) of one step: forward, backward, optimizer."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params)
    _warm(opt, params)
    tracker = _Tracker()
    tracker.track_external(model, opt)
    cast = torch.autocast("cpu", dtype=autocast) if autocast is not None else nullcontext()
    with tracker, flash_attention():
        with cast:
            output = model(**inputs)
        _first_tensor(output).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = {name: 0 for name in CATEGORIES}
    for device_peak in tracker.get_tracker_snapshot("peak").values():
        for ref, size in device_peak.items():
            if ref in _BY_REF:
                peak[_BY_REF[ref]] += int(size)
    return peak


class _Once(torch.nn.Module):
    """One call around ``run``: MemTracker refuses a root module called twice, and a video
    VAE calls its encoder once per chunk of frames (as a submodule, that is allowed)."""

    def __init__(self, module: torch.nn.Module, run: Callable[[], Any]) -> None:
        super().__init__()
        self.module = module
        self._run = run

    def forward(self) -> Any:
        return self._run()


def tracked_forward(module: torch.nn.Module, run: Callable[[], Any]) -> int:
    """Peak bytes, weights of ``module`` left out, of ``run`` (a no-grad forward of it, such
    as a VAE encode)."""
    tracker = _Tracker()
    tracker.track_external(module)
    with tracker, flash_attention(), torch.no_grad():
        _Once(module, run)()
    weights = (_MemRefType.PARAM, _MemRefType.BUFFER)
    peak = tracker.get_tracker_snapshot("peak")
    return sum(
        int(v) for d in peak.values() for k, v in d.items() if k in _BY_REF and k not in weights
    )
