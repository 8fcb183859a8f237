"""What a family declares for the memory estimate: its trained model at real size.

A family names a :class:`RealSize` in ``ModelFamily.real_size``. The estimate never loads a
weight: it calls ``build(units)`` inside a ``FakeTensorMode`` (every tensor has a shape and a
dtype but no storage), so a 20B model costs nothing to build. ``units`` is the number of
repeating units of blocks to build at real width (one Qwen-Image block; one VACE block and
the four main blocks it rides with): the estimate builds one and two of them and scales per
unit to ``RealSize.units``.

This module imports nothing heavy: families import it when they register.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Shape:
    """The size of one training batch: ``num_frames`` is None for image families."""

    batch_size: int
    height: int
    width: int
    num_frames: int | None = None

    def describe(self) -> str:
        frames = f"x{self.num_frames} frames" if self.num_frames else ""
        return f"{self.width}x{self.height}{frames}, batch {self.batch_size}"


@dataclass(frozen=True)
class RealSize:
    """A family's trained model at its real size, for ``--estimate-memory``.

    Attributes:
        build: ``build(units)`` -> the model (``nn.Module``) with ``units`` repeating units of
            blocks and everything else at real size; called inside the fake mode with the
            default dtype set to the weights' dtype.
        inputs: ``inputs(model, shape, dtype)`` -> the keyword arguments of one training
            forward of ``model`` for a batch of ``shape`` (latents, text embeddings, timestep).
        units: repeating units of the real model (Qwen-Image: 60 blocks).
        blocks_per_unit: transformer blocks in one unit (Wan2.1-VACE-14B: 5, four main
            blocks and one VACE block); block swap counts blocks.
        model: the pipeline model ``build`` makes (``dit``).
        views: other pipeline models that are a part of it (``{"vace": "vace_blocks"}``), so
            ``--lora-base-model vace`` puts LoRA on that part only.
        frozen: parameters of the frozen components the feature cache removes from the GPU
            (``{"text_encoder": 8.29e9, "vae": 0.127e9}``).
        encode: ``encode(shape, dtype)`` -> ``(vae, run)``: the VAE at real size (built
            inside the fake mode) and a function that encodes one batch of ``shape`` with
            it, for the activations of the encode the cache saves; None: not counted.
        attention: ``attention(shape)`` -> ``(heads, sequence length, layers)`` of the
            model's self-attention, for the size of the scores a math kernel materialises.
        params: the published parameter count of the real model, checked by the tests.
        name: what the estimate prints (``QwenImageTransformer2DModel, 60 blocks``).
    """

    build: Callable[[int], Any]
    inputs: Callable[..., dict[str, Any]]
    units: int
    blocks_per_unit: int = 1
    model: str = "dit"
    views: Mapping[str, str] = field(default_factory=dict)
    frozen: Mapping[str, float] = field(default_factory=dict)
    encode: Callable[..., tuple[Any, Callable[[], Any]]] | None = None
    attention: Callable[[Shape], tuple[int, int, int]] | None = None
    params: float = 0.0
    name: str = ""

    @property
    def num_blocks(self) -> int:
        return self.units * self.blocks_per_unit
