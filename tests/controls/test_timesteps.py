"""--timestep-sampling, --flow-shift, --dynamic-shift: the drawn timesteps have the
distribution each method promises (moments of 10,000 draws against the integrals), inside the
boundaries, and the family's training schedule is overridden only where asked."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from diffsynth_core.scheduler import FlowMatchScheduler, TimestepSampling, calculate_shift

N = 10_000
# Gauss quadrature: z ~ N(0, 1) (Hermite) and v ~ U(0, 1) (Legendre), exact to far below
# the sampling error of 10,000 draws
Z, ZW = np.polynomial.hermite_e.hermegauss(200)
ZW = ZW / ZW.sum()
V, VW = np.polynomial.legendre.leggauss(400)
V, VW = (V + 1) / 2, VW / VW.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _shifted(s: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: s * w / (1 + (s - 1) * w)


def _mode(v: np.ndarray, scale: float) -> np.ndarray:  # the sigma before the shift: 1 - u
    return 1 - (1 - v - scale * (np.cos(np.pi * v / 2) ** 2 - 1 + v))


# (method, parameters, family shift, (nodes, weights) of the underlying variable, sigma of it)
CASES = {
    "uniform": ("uniform", {}, 1.0, (V, VW), lambda v: v),
    "uniform-shift-3": ("uniform", {}, 3.0, (V, VW), _shifted(3.0)),
    "logit-normal": ("logit-normal", {}, 1.0, (Z, ZW), _sigmoid),
    "logit-normal-mean-1-std-0.5": (
        "logit-normal", {"logit_mean": 1.0, "logit_std": 0.5}, 1.0, (Z, ZW), lambda z: _sigmoid(1 + 0.5 * z)
    ),
    "logit_normal-shift-3": ("logit_normal", {}, 3.0, (Z, ZW), lambda z: _shifted(3.0)(_sigmoid(z))),
    "mode": ("mode", {}, 1.0, (V, VW), lambda v: _mode(v, 1.29)),
    "mode-scale-0.5": ("mode", {"mode_scale": 0.5}, 1.0, (V, VW), lambda v: _mode(v, 0.5)),
    # sigmoid ignores the family's shift; shift applies it
    "sigmoid-scale-2-shift-3": ("sigmoid", {"sigmoid_scale": 2.0}, 3.0, (Z, ZW), lambda z: _sigmoid(2 * z)),
    "shift-3": ("shift", {}, 3.0, (Z, ZW), lambda z: _shifted(3.0)(_sigmoid(z))),
    "shift-5-scale-0.7": (
        "shift", {"sigmoid_scale": 0.7}, 5.0, (Z, ZW), lambda z: _shifted(5.0)(_sigmoid(0.7 * z))
    ),
}  # fmt: skip


def _moments(nodes: tuple[np.ndarray, np.ndarray], sigma: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float, float]:
    x, w = nodes
    s = sigma(x)
    mean = float((w * s).sum())
    var = float((w * (s - mean) ** 2).sum())
    fourth = float((w * (s - mean) ** 4).sum())
    return mean, var, fourth


@pytest.mark.parametrize("case", list(CASES))
def test_drawn_timesteps_have_the_methods_moments(case: str) -> None:
    method, params, shift, nodes, sigma = CASES[case]
    scheduler = FlowMatchScheduler(shift=shift)
    generator = torch.Generator().manual_seed(1)
    t = scheduler.sample_timesteps(N, TimestepSampling(method, **params), generator=generator)
    drawn = t.double().numpy() / 1000
    mean, var, fourth = _moments(nodes, sigma)
    # five standard errors of the sample mean and variance (plus the 1/1000 grid of indices)
    assert abs(drawn.mean() - mean) < 5 * math.sqrt(var / N) + 1e-3, (drawn.mean(), mean)
    assert abs(drawn.var() - var) < 5 * math.sqrt((fourth - var**2) / N) + 1e-3, (drawn.var(), var)


def test_the_methods_differ_where_they_should() -> None:
    """Sanity of the table above: the parameters move the distribution (else the moments test
    could pass for a method that ignores them)."""
    scheduler = FlowMatchScheduler(shift=1.0)

    def mean(**kw: float | str) -> float:
        method = str(kw.pop("method"))
        sampling = TimestepSampling(method, **kw)  # type: ignore[arg-type]
        return float(scheduler.sample_timesteps(N, sampling, generator=torch.Generator().manual_seed(0)).mean())

    assert mean(method="logit-normal", logit_mean=1.0) > mean(method="logit-normal") + 100
    assert abs(mean(method="logit-normal") - 500) < 10
    spread = [scheduler.sample_timesteps(N, TimestepSampling("sigmoid", sigmoid_scale=s)).std() for s in (0.5, 3.0)]
    assert spread[1] > 1.5 * spread[0]


@pytest.mark.parametrize("method", ["uniform", "logit-normal", "mode", "sigmoid", "shift"])
def test_draws_are_scaled_into_the_timestep_boundaries(method: str) -> None:
    scheduler = FlowMatchScheduler(shift=3.0)
    t = scheduler.sample_timesteps(
        N, TimestepSampling(method), min_boundary=0.25, max_boundary=0.5, generator=torch.Generator().manual_seed(0)
    )
    top, bottom = float(scheduler.timesteps[250]), float(scheduler.timesteps[499])
    if method == "sigmoid":  # unshifted: the window is a window of sigma
        top, bottom = 750.0, 500.0
    assert t.max() <= top + 1e-3 and t.min() >= bottom - 1e-3
    # scaled, not clamped: no pile of draws at an edge
    assert float((t >= top - 1e-3).float().mean()) < 0.05


def test_the_default_draws_are_those_of_earlier_versions() -> None:
    """uniform and logit_normal without parameters draw the same numbers as before."""
    scheduler = FlowMatchScheduler(shift=3.0)
    torch.manual_seed(5)
    new = scheduler.sample_timesteps(64, TimestepSampling("logit_normal"))
    torch.manual_seed(5)
    u = torch.sigmoid(torch.randn(64))
    old = scheduler.timesteps[((1 - u) * 999).round().long().clamp(0, 999)]
    assert torch.equal(new, old)
    torch.manual_seed(5)
    new = scheduler.sample_timesteps(64)
    torch.manual_seed(5)
    assert torch.equal(new, scheduler.timesteps[torch.randint(0, 1000, (64,))])


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown timestep sampling 'beta'"):
        TimestepSampling("beta")


QWEN = dict(
    use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
    max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential", training_mu=0.8,
)  # fmt: skip


def test_flow_shift_replaces_the_training_shift_and_leaves_inference_alone() -> None:
    scheduler = FlowMatchScheduler(shift=3.0)
    scheduler.configure_training(shift=5.0)
    base = torch.linspace(1, 0, 1001, dtype=torch.float64)[:-1]
    torch.testing.assert_close(scheduler.sigmas, (5 * base / (1 + 4 * base)).float())
    scheduler.set_timesteps(10)  # inference keeps the family's shift of 3
    reference = FlowMatchScheduler(shift=3.0)
    reference.set_timesteps(10)
    torch.testing.assert_close(scheduler.sigmas, reference.sigmas)
    scheduler.set_timesteps(1000, training=True)  # back to training (after a sample): still 5
    torch.testing.assert_close(scheduler.sigmas, (5 * base / (1 + 4 * base)).float())

    qwen = FlowMatchScheduler(**QWEN)  # a mu-shifted family: --flow-shift 1 trains unshifted
    qwen.configure_training(shift=1.0)
    assert float(qwen.sigmas[500]) == pytest.approx(0.5 + 0.5 * 0.0, abs=0.02)
    assert float(FlowMatchScheduler(**QWEN).sigmas[500]) > 0.6  # e^0.8 shifts it up


def test_dynamic_shift_follows_the_resolution_as_inference_does() -> None:
    qwen = FlowMatchScheduler(**QWEN)
    fixed = qwen.sigmas.clone()
    qwen.set_training_resolution(1024, 1024)  # the family's fixed mu: nothing changes
    assert torch.equal(qwen.sigmas, fixed)
    qwen.configure_training(dynamic=True)
    qwen.set_training_resolution(256, 256)
    small = qwen.sigmas.clone()
    qwen.set_training_resolution(1024, 1024)
    large = qwen.sigmas.clone()
    assert float(large[500]) > float(small[500])  # more tokens, more shift
    mu = calculate_shift(64 * 64, 256, 8192, 0.5, 0.9)
    reference = FlowMatchScheduler(**{**QWEN, "training_mu": mu})
    torch.testing.assert_close(large, reference.sigmas)
    with pytest.raises(ValueError, match="exclude each other"):
        qwen.configure_training(shift=2.0, dynamic=True)


@pytest.mark.parametrize("scale", [1.29, 0.5, -0.5])
def test_mode_is_the_sd3_formula_of_the_same_draws(scale: float) -> None:
    """Exact, where the moments test is coarse: mode's positions are SD3's f(v) of its draws."""
    positions = TimestepSampling("mode", mode_scale=scale).positions(256, torch.Generator().manual_seed(3))
    v = torch.rand(256, generator=torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(positions, 1 - v - scale * (torch.cos(math.pi * v / 2) ** 2 - 1 + v))
