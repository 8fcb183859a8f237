"""Training losses. ``FlowMatchSFTLoss`` is the built-in ``--loss sft``.

A loss receives the pipeline and the inputs every unit produced (shared and positive merged),
draws one timestep per sample, noises ``input_latents`` and compares ``pipe.model_fn``'s
prediction with the flow target. It is computed in fp32 whatever the model's dtype.
"""

from __future__ import annotations

from typing import Any

import torch


def FlowMatchSFTLoss(pipe: Any, **inputs: Any) -> torch.Tensor:  # noqa: N802 - the seed's name
    """Weighted MSE between ``model_fn``'s prediction and ``noise - x0``.

    Reads ``input_latents`` (x0, batch first), optional ``noise`` (drawn when absent),
    ``min_timestep_boundary`` / ``max_timestep_boundary`` (fractions of the schedule) and
    ``timestep_sampling`` (``uniform`` or ``logit_normal``).
    """
    scheduler = pipe.scheduler
    x0 = inputs["input_latents"]
    noise = inputs.get("noise")
    if noise is None or noise.shape != x0.shape:
        noise = torch.randn_like(x0)
    idx = scheduler.sample_timestep_indices(
        x0.shape[0],
        device="cpu",
        min_boundary=inputs.get("min_timestep_boundary", 0.0) or 0.0,
        max_boundary=inputs.get("max_timestep_boundary", 1.0) or 1.0,
        method=inputs.get("timestep_sampling", "uniform") or "uniform",
    )
    timestep = scheduler.timesteps[idx].to(device=x0.device)
    model_inputs = dict(inputs)
    model_inputs["latents"] = scheduler.add_noise(x0, noise, timestep)
    model_inputs["timestep"] = timestep.to(dtype=x0.dtype)
    target = scheduler.training_target(x0, noise, timestep)
    pred = pipe.model_fn(**model_inputs)
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    weight = scheduler.training_weight(timestep).float()
    return (per_sample * weight).mean()
