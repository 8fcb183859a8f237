"""--loss-type and --loss-weighting: the SFT loss is the chosen distance times the chosen
weight of each sample's timestep, computed by hand here from the timesteps it drew."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from diffsynth_core.scheduler import FlowMatchScheduler
from diffsynth_core.training.losses import FlowMatchSFTLoss


class FixedPipe:
    """A pipeline whose model predicts a fixed tensor, and which remembers the timesteps."""

    def __init__(self, prediction: torch.Tensor) -> None:
        self.scheduler = FlowMatchScheduler(shift=3.0)
        self.prediction = prediction
        self.timesteps: list[torch.Tensor] = []

    def model_fn(self, timestep: torch.Tensor, **_: Any) -> torch.Tensor:
        self.timesteps.append(timestep)
        return self.prediction


def _case(**settings: Any) -> tuple[float, torch.Tensor, torch.Tensor, FixedPipe]:
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, generator=gen), torch.randn(4, 3, 8, generator=gen)
    pipe = FixedPipe(torch.randn(4, 3, 8, generator=gen) * 3)
    torch.manual_seed(1)
    loss = FlowMatchSFTLoss(pipe, input_latents=x0, noise=noise, **settings)
    return float(loss), pipe.prediction - (noise - x0), pipe.timesteps[0], pipe


def test_the_default_is_the_bell_weighted_mse() -> None:
    loss, error, t, pipe = _case()
    expected = (error.pow(2).flatten(1).mean(1) * pipe.scheduler.training_weight(t)).mean()
    assert loss == pytest.approx(float(expected), rel=1e-6)
    assert _case(loss_type="mse", loss_weighting="family")[0] == loss


@pytest.mark.parametrize("loss_type", ["l1", "huber"])
def test_loss_type_picks_the_distance(loss_type: str) -> None:
    loss, error, t, pipe = _case(loss_type=loss_type, huber_delta=0.5, loss_weighting="none")
    if loss_type == "l1":
        per_element = error.abs()
    else:  # quadratic below delta, linear above
        a = error.abs()
        per_element = torch.where(a < 0.5, 0.5 * a**2, 0.5 * (a - 0.25))
    assert loss == pytest.approx(float(per_element.flatten(1).mean(1).mean()), rel=1e-5)
    assert loss != pytest.approx(_case(loss_weighting="none")[0], rel=1e-3)


def test_loss_weighting_picks_the_weight() -> None:
    plain, error, t, _ = _case(loss_weighting="none")
    per_sample = error.pow(2).flatten(1).mean(1)
    assert plain == pytest.approx(float(per_sample.mean()), rel=1e-6)
    cosmap, _, _, _ = _case(loss_weighting="cosmap")
    sigma = t.float() / 1000
    weight = 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
    assert cosmap == pytest.approx(float((per_sample * weight).mean()), rel=1e-6)
    assert _case(loss_weighting="bell")[0] == pytest.approx(_case()[0], rel=1e-6)  # the family's


def test_timestep_settings_reach_the_draw() -> None:
    *_, pipe = _case(timestep_sampling="sigmoid", sigmoid_scale=0.01)  # all near sigma 0.5
    assert torch.all((pipe.timesteps[0] - 500).abs() < 10)
    *_, pipe = _case(timestep_sampling="logit-normal", logit_mean=6.0, min_timestep_boundary=0.5)
    assert torch.all(pipe.timesteps[0] <= float(pipe.scheduler.timesteps[500]) + 1e-3)


def test_an_unknown_loss_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown loss type 'l3'"):
        _case(loss_type="l3")
