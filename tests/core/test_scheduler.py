"""FlowMatchScheduler against diffusers' FlowMatchEulerDiscreteScheduler and the SFT maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffsynth_core.scheduler import FlowMatchScheduler, calculate_shift

QWEN = dict(
    use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
    max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
)


@pytest.mark.parametrize("steps,seq_len", [(4, 16), (30, 4096), (50, 8192)])
def test_dynamic_shift_sigmas_match_diffusers(steps: int, seq_len: int) -> None:
    ref = FlowMatchEulerDiscreteScheduler(**QWEN)
    mu = calculate_shift(seq_len, 256, 8192, 0.5, 0.9)
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    ours = FlowMatchScheduler(**QWEN)
    ours.set_timesteps(steps, image_seq_len=seq_len)
    torch.testing.assert_close(ours.sigmas, ref.sigmas.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.timesteps, ref.timesteps.float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_static_shift_matches_diffusers(shift: float) -> None:
    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / 20, 20))
    ours = FlowMatchScheduler(shift=shift)
    ours.set_timesteps(20)
    torch.testing.assert_close(ours.sigmas, ref.sigmas.float(), atol=1e-6, rtol=0)


def test_euler_step_matches_diffusers() -> None:
    ref = FlowMatchEulerDiscreteScheduler(**QWEN)
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / 5, 5), mu=0.7)
    ours = FlowMatchScheduler(**QWEN)
    ours.set_timesteps(5, mu=0.7)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, generator=gen)
    a, b = sample.clone(), sample.clone()
    for t_ref, t_ours in zip(ref.timesteps, ours.timesteps, strict=True):
        out = torch.randn(1, 4, 8, generator=gen)
        a = ref.step(out, t_ref, a).prev_sample
        b = ours.step(out, t_ours, b)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_training_schedule_qwen_mu_and_terminal() -> None:
    s = FlowMatchScheduler(**QWEN, training_mu=0.8)
    assert len(s.timesteps) == 1000
    assert s.sigmas[0] == pytest.approx(1.0) and s.sigmas[-1] == pytest.approx(0.02, abs=1e-6)
    assert torch.all(s.sigmas[1:] < s.sigmas[:-1])


def test_training_static_shift_is_wan_formula() -> None:
    s = FlowMatchScheduler(shift=5.0)
    base = torch.linspace(1, 0, 1001, dtype=torch.float64)[:-1]
    torch.testing.assert_close(s.sigmas, (5 * base / (1 + 4 * base)).float())


def test_training_weights_are_a_bell_with_mean_one() -> None:
    s = FlowMatchScheduler(shift=1.0)
    w = s.training_weights
    assert w.mean().item() == pytest.approx(1.0, abs=1e-5)
    peak = s.timesteps[int(w.argmax())].item()
    assert 450 < peak < 550 and w.min().item() == pytest.approx(0.0, abs=1e-6)
    t = s.timesteps[torch.tensor([0, 500, 999])]
    torch.testing.assert_close(s.training_weight(t), w[torch.tensor([0, 500, 999])])


def test_add_noise_and_target_one_sigma_per_sample() -> None:
    s = FlowMatchScheduler()
    x0, noise = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    t = torch.tensor([250.0, 750.0])
    xt = s.add_noise(x0, noise, t)
    assert torch.allclose(xt[0], torch.full((3, 4), 0.75)) and torch.allclose(xt[1], torch.full((3, 4), 0.25))
    assert torch.equal(s.training_target(x0, noise, t), -x0)


def test_timestep_sampling_respects_boundaries() -> None:
    s = FlowMatchScheduler(shift=3.0)
    gen = torch.Generator().manual_seed(0)
    for method in ("uniform", "logit_normal"):
        idx = s.sample_timestep_indices(4000, min_boundary=0.25, max_boundary=0.5, method=method, generator=gen)
        assert idx.min() >= 250 and idx.max() < 500
    uniform = s.sample_timestep_indices(20000, generator=gen)
    assert abs(uniform.float().mean().item() - 499.5) < 10
    with pytest.raises(ValueError, match="uniform or logit_normal"):
        s.sample_timestep_indices(1, method="beta")
