"""The LR schedule's values and the optimizer choice."""

from __future__ import annotations

import math

import pytest
import torch

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.optim import LRSchedule, build_optimizer


def test_warmup_then_constant() -> None:
    schedule = LRSchedule("constant", 1.0, warmup_steps=3, total_steps=10)
    assert [schedule(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_linear_decays_to_zero_after_warmup() -> None:
    schedule = LRSchedule("linear", 2.0, warmup_steps=1, total_steps=5)
    assert [schedule(s) for s in range(5)] == pytest.approx([1.0, 2.0, 1.5, 1.0, 0.5])


def test_cosine() -> None:
    schedule = LRSchedule("cosine", 1.0, warmup_steps=0, total_steps=4)
    expected = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert [schedule(s) for s in range(4)] == pytest.approx(expected)
    assert schedule(2) == pytest.approx(0.5)


def test_apply_sets_every_group() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert LRSchedule("linear", 1.0, 0, 4).apply(optimizer, 2) == pytest.approx(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_unknown_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="constant, linear, cosine"):
        LRSchedule("exponential", 1.0, 0, 1)


def test_optimizer_by_alias_and_dotted_path_with_weight_decay() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    adamw = build_optimizer(params, "AdamW", 0.1, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    assert isinstance(build_optimizer(params, "torch.optim.SGD", 0.1), torch.optim.SGD)


def test_bad_optimizers_are_config_errors() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="cannot be imported"):
        build_optimizer(params, "bitsandbytes_missing.optim.AdamW8bit")
    with pytest.raises(ConfigError, match="not a torch.optim.Optimizer"):
        build_optimizer(params, "torch.nn.Linear")
    with pytest.raises(ConfigError, match="nothing to train"):
        build_optimizer([], "AdamW")
