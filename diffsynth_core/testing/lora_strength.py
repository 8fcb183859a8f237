"""Checks that a saved LoRA file has the strength of the LoRA that was trained.

A LoRA trained at ``--lora-rank 4 --lora-alpha 8`` acts as ``W + (8 / 4) * B @ A``; a file
that folds the ratio the wrong way round (``rank / alpha``) is 4x too weak and still "changes
the output". So the reference here is the trained model itself, rebuilt from the raw peft
weights of the training state (``state/step-N/trainable.safetensors``: unscaled, written by
the resume code, not by the exporter), and every check compares the LoRA's *effect* on each
targeted layer (output with LoRA minus output without) against the trained effect.

Per layer rather than through a whole pipeline: equal outputs of every targeted linear layer
on the same inputs mean an equal model, the check costs milliseconds, and a mismatch names
the layer. Used by the ``test_lora_strength`` tests of every family plugin.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch


def latest_trainable(output: Path) -> Path:
    """``trainable.safetensors`` of the newest training state of a run's output folder."""
    states = sorted((output / "state").glob("step-*/trainable.safetensors"))
    if not states:
        raise FileNotFoundError(f"no training state under {output / 'state'}")
    return states[-1]


def rebuild_trained(
    pipe: Any, base: str, targets: str, rank: int, alpha: float, trainable: Path
) -> torch.nn.Module:
    """``pipe.<base>`` with LoRA injected and the trained (raw peft) weights loaded."""
    from safetensors.torch import load_file

    from ..training.module import switch_pipe_to_training_mode

    switch_pipe_to_training_mode(
        pipe, lora_base_model=base, lora_target_modules=targets, lora_rank=rank,
        lora_alpha=alpha,
    )  # fmt: skip
    saved = load_file(str(trainable))
    model = getattr(pipe, base)
    params = dict(pipe.named_parameters())
    with torch.no_grad():
        for key, value in saved.items():
            name = key.removeprefix("pipe.")
            if name in params:
                params[name].copy_(value)
    loaded = {k for k in saved if k.removeprefix("pipe.") in params}
    if not loaded:
        raise AssertionError(f"no trained weight of {trainable} belongs to pipe.{base}")
    return model


def lora_layers(model: torch.nn.Module) -> list[str]:
    """Names of the modules peft put a LoRA on."""
    return [n for n, m in model.named_modules() if isinstance(getattr(m, "r", None), dict)]


def layer_outputs(model: torch.nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Each named linear layer's output on fixed random inputs (the same for every model)."""
    out = {}
    with torch.no_grad():
        for index, name in enumerate(sorted(names)):
            layer = model.get_submodule(name)
            generator = torch.Generator().manual_seed(index)
            weight = cast(torch.Tensor, layer.weight)  # a LoRA target: a Linear or a Conv
            x = torch.randn(3, weight.shape[1], generator=generator).to(weight.device, weight.dtype)
            out[name] = layer(x).float()
    return out


def assert_same_effect(
    got: dict[str, torch.Tensor],
    trained: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor],
    what: str,
    rtol: float = 1e-3,
) -> float:
    """The LoRA's effect on every layer (``got - base``) equals the trained one within
    ``rtol`` of the trained effect; returns the largest trained effect (must be non-zero)."""
    assert got.keys() == trained.keys(), f"{what}: other layers than the trained LoRA's"
    largest = max((trained[k] - base[k]).abs().max().item() for k in trained)
    assert largest > 1e-4, "the trained LoRA does nothing: train longer or with a higher lr"
    for name in trained:
        effect, want = got[name] - base[name], trained[name] - base[name]
        error = (effect - want).abs().max().item()
        ratio = effect.norm().item() / max(want.norm().item(), 1e-12)
        assert error <= rtol * largest, (
            f"{what}: layer {name} gets {ratio:.3g}x the trained LoRA's effect "
            f"(max error {error:.3g}, effect {largest:.3g})"
        )
    return largest


def train_with_cli(args: list[str], output: Path) -> Path:
    """``diffsynth train ARGS --output OUTPUT`` in process; the output folder."""
    from click.testing import CliRunner

    from ..cli.main import build_cli

    result = CliRunner().invoke(
        build_cli(), [*map(str, args), "--output", str(output)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return output


def export_formats(
    pipe: Any, folder: Path, formats: Iterable[str], remove_prefix: str = "pipe.dit."
) -> dict[str, Path]:
    """The LoRA of ``pipe`` written by ``ModelLogger`` (the CLI's writer) in each format,
    with the family's conversions when ``pipe.family`` is set."""
    from ..training.logger import ModelLogger
    from ..training.module import PipelineTrainingModule

    module = PipelineTrainingModule(pipe, lambda *a, **k: torch.zeros(()))  # never called
    family = getattr(pipe, "family", None)
    return {
        fmt: ModelLogger(folder / fmt, remove_prefix, export_format=fmt, family=family).write(
            module, module.state_dict(), "final", 1, 0
        )
        for fmt in formats
    }
