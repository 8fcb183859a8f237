"""Speed settings of ``diffsynth train``: regional compilation, the attention kernel, TF32.

* ``--compile``: ``torch.compile`` of each repeated block (``ModelFamily.blocks``), not of the
  whole model: the blocks are identical, so one compiled graph serves all of them, the first
  step compiles in seconds rather than minutes, and what runs between blocks stays eager.
* ``--attention``: diffusers' attention dispatcher (``ModelMixin.set_attention_backend``) on
  the trained model. ``sdpa`` is PyTorch's own choice (diffusers' default); the others pin one
  kernel. A kernel this machine lacks is a one-line error at start-up, not in the first step.
* ``--tf32``: float32 matrix products on TF32 tensor cores (CUDA only). Safe for training
  here: the base computes in bf16 under ``--mixed-precision bf16``, and TF32 keeps fp32's range.
* :func:`to_device`: host-to-GPU copies of batch tensors and cached features through pinned
  memory, non-blocking (``BasePipeline.preprocess_image`` / ``generate_noise``, the cache).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError

# our name -> diffusers' AttentionBackendName (the *_hub kernels download: never offered)
ATTENTION = {
    "sdpa": "native", "math": "_native_math", "efficient": "_native_efficient",
    "cudnn": "_native_cudnn", "flash-sdpa": "_native_flash", "flash": "flash",
    "flash3": "_flash_3", "sage": "sage", "flex": "flex", "xformers": "xformers",
}  # fmt: skip
CUDA_ONLY = {"efficient", "cudnn", "flash-sdpa", "flash", "flash3", "sage", "xformers"}


def set_attention(model: torch.nn.Module, name: str, device: Any) -> None:
    """Route every attention layer of ``model`` through kernel ``name`` (``ATTENTION``)."""
    if name == "sdpa":
        return  # diffusers' default (and a plain model's own attention): nothing to change
    setter = getattr(model, "set_attention_backend", None)
    if setter is None:
        raise ConfigError(
            f"--attention {name}: {type(model).__name__} has no diffusers attention dispatcher; "
            "leave --attention out for this model"
        )
    if name in CUDA_ONLY and torch.device(device).type != "cuda":
        raise ConfigError(f"--attention {name} needs a CUDA GPU; use sdpa or math on {device}")
    try:
        setter(ATTENTION[name])
    except (RuntimeError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--attention {name} is not available on this machine ({first}); use sdpa"
        ) from exc


def compile_blocks(blocks: list[torch.nn.Module], backend: str = "inductor") -> None:
    """Regional compilation: each block's call compiled (one graph, reused by every block)."""
    for block in blocks:
        block.compile(backend=backend)


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matrix products and convolutions on CUDA (no effect elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def apply_speed_settings(pipe: Any, model: str, config: Any, device: Any) -> None:
    """``--attention``, ``--compile`` and ``--tf32`` of ``config`` on pipeline model ``model``."""
    from ..blocks import repeated_blocks

    set_tf32(bool(config.tf32))
    set_attention(getattr(pipe, model), config.attention, device)
    if config.compile:
        if config.blocks_to_swap:
            raise ConfigError(
                "--compile with --blocks-to-swap is not supported yet (the swap's hooks would "
                "run inside the compiled blocks): leave one of them out"
            )
        compile_blocks(repeated_blocks(pipe, model, "--compile"))


def to_device(
    tensor: torch.Tensor, device: Any, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``tensor.to(device, dtype)``; a host tensor bound for a CUDA device goes through pinned
    memory with ``non_blocking=True``, so the copy overlaps the GPU work queued before it (the
    caching host allocator keeps the pinned buffer alive until the copy is done). Elsewhere
    (CPU, or already on the device) it is the plain ``.to``."""
    target = torch.device(device)
    if target.type != "cuda" or tensor.device.type != "cpu" or not torch.cuda.is_available():
        return tensor.to(device=target, dtype=dtype)
    pinned = tensor if tensor.is_pinned() else tensor.pin_memory()
    return pinned.to(device=target, dtype=dtype, non_blocking=True)
