"""to_device (diffsynth_core/training/speed.py): pinned, non-blocking copies to CUDA only, the
values unchanged, and the pipeline's and the cache's host-to-device copies go through it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import diffsynth_core.cache.entries as entries
import diffsynth_core.pipeline as pipeline_py
from diffsynth_core.pipeline import BasePipeline
from diffsynth_core.training import speed
from diffsynth_core.training.speed import to_device


class FakeCuda:
    """Stands in for a CUDA machine on a CPU one: records pin_memory and .to calls; a copy
    "to cuda" lands on the CPU (with its dtype), so the values can be compared."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pinned: list[torch.Tensor] = []
        self.copies: list[dict[str, Any]] = []
        real_to = torch.Tensor.to

        def pin_memory(tensor: torch.Tensor, *_: Any) -> torch.Tensor:
            self.pinned.append(tensor)
            return tensor.clone()

        def to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            device = kwargs.get("device", args[0] if args else None)
            if isinstance(device, torch.device) and device.type == "cuda":
                self.copies.append(kwargs)
                return real_to(tensor, dtype=kwargs.get("dtype"))
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", to)


def test_a_cpu_target_is_a_plain_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda(monkeypatch)  # even where CUDA is there, a CPU target is not pinned
    x = torch.randn(3, 4)
    out = to_device(x, "cpu", torch.float64)
    assert fake.pinned == [] and fake.copies == []
    assert out.dtype == torch.float64 and torch.equal(out, x.double())
    assert to_device(x, torch.device("cpu")) is x  # nothing to do: no copy at all


def test_a_cuda_target_is_pinned_and_non_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda(monkeypatch)
    x = torch.randn(3, 4)
    out = to_device(x, "cuda:0", torch.bfloat16)
    assert len(fake.pinned) == 1 and fake.pinned[0] is x
    assert fake.copies == [{"device": torch.device("cuda:0"), "dtype": torch.bfloat16, "non_blocking": True}]
    assert torch.equal(out, x.to(torch.bfloat16))


def test_without_cuda_a_cuda_target_is_left_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    to_device(torch.zeros(2), "cuda")  # (the fake lands it on the CPU; torch would refuse)
    assert fake.pinned == [] and fake.copies == [{"device": torch.device("cuda"), "dtype": None}]


def _spy(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []

    def spy(tensor: torch.Tensor, device: Any, dtype: Any = None) -> torch.Tensor:
        calls.append((torch.device(device), dtype))
        return speed.to_device(tensor, device, dtype)

    monkeypatch.setattr(module, "to_device", spy)
    return calls


def test_the_pipeline_and_the_cache_copy_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    calls = _spy(monkeypatch, pipeline_py)
    pipe = BasePipeline(torch_dtype=torch.float64)
    noise = pipe.generate_noise((1, 4, 2, 2), seed=3)
    assert torch.equal(noise, torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(3)).double())
    image = pipe.preprocess_image(Image.new("RGB", (4, 4), (255, 0, 0)))
    assert image[0, 0].eq(1).all() and image[0, 1:].eq(-1).all()
    assert calls == [(torch.device("cpu"), torch.float64)] * 2
    cache_calls = _spy(monkeypatch, entries)
    stored = {"a": torch.arange(3.0)}
    out = entries._unpack({"t": "a"}, stored.__getitem__, "cpu")
    assert torch.equal(out, stored["a"]) and cache_calls == [(torch.device("cpu"), None)]
