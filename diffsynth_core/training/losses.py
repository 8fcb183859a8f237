"""Training losses. ``FlowMatchSFTLoss`` is the built-in ``--loss sft``.

A loss receives the pipeline and the inputs every unit produced (shared and positive merged),
draws one timestep per sample, noises ``input_latents`` and compares ``pipe.model_fn``'s
prediction with the flow target. It is computed in fp32 whatever the model's dtype.

The inputs that steer it come from ``diffsynth train``'s settings (``PipelineTrainingModule``
adds them to the shared inputs), and a plugin's loss may read the same ones:

* ``timestep_sampling`` (a method of :data:`~diffsynth_core.scheduler.TIMESTEP_SAMPLING`) with
  ``logit_mean``, ``logit_std``, ``mode_scale``, ``sigmoid_scale``, and
  ``min_timestep_boundary`` / ``max_timestep_boundary``;
* ``loss_type``: a name of :data:`LOSS_TYPES` (``mse``, ``huber`` with ``huber_delta``, ``l1``);
* ``loss_weighting``: a name of :data:`LOSS_WEIGHTINGS` (``family``: the schedule's own
  weights, a bell today; ``none``; ``bell``; ``cosmap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..scheduler import TimestepSampling

# per-element distance between prediction and target (fp32), averaged per sample afterwards
LOSS_TYPES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "mse": lambda pred, target, _: (pred - target).pow(2),
    "l1": lambda pred, target, _: (pred - target).abs(),
    "huber": lambda pred, target, delta: torch.nn.functional.huber_loss(
        pred, target, reduction="none", delta=delta
    ),
}


def _bell(scheduler: Any, timestep: torch.Tensor) -> torch.Tensor:
    # the bell over this timestep's schedule, normalised there to mean 1 (as "family" is today)
    weights = scheduler._bell_weights(scheduler.timesteps.to(timestep.device))
    idx = torch.argmin((scheduler.timesteps.to(timestep.device)[None, :] - timestep.float()[:, None]).abs(), dim=1)
    return weights[idx]


def _cosmap(scheduler: Any, timestep: torch.Tensor) -> torch.Tensor:
    sigma = timestep.float() / scheduler.config.num_train_timesteps
    return 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))


# weight of each sample's loss by its timestep
LOSS_WEIGHTINGS: dict[str, Callable[[Any, torch.Tensor], torch.Tensor]] = {
    "family": lambda scheduler, t: scheduler.training_weight(t),
    "none": lambda _, t: torch.ones(t.shape, device=t.device),
    "bell": _bell,
    "cosmap": _cosmap,
}


def timestep_sampling(inputs: Mapping[str, Any]) -> TimestepSampling:
    """The ``--timestep-sampling`` method and parameters given in a loss's inputs."""
    given = {
        name: inputs[name]
        for name in ("logit_mean", "logit_std", "mode_scale", "sigmoid_scale")
        if inputs.get(name) is not None
    }
    return TimestepSampling(inputs.get("timestep_sampling") or "uniform", **given)


def _choice(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r} (use {', '.join(table)})")
    return table[name]


def FlowMatchSFTLoss(pipe: Any, **inputs: Any) -> torch.Tensor:  # noqa: N802 - the seed's name
    """Weighted distance between ``model_fn``'s prediction and ``noise - x0``.

    Reads ``input_latents`` (x0, batch first), optional ``noise`` (drawn when absent),
    ``height`` / ``width`` (for a dynamic training shift) and the settings of the module
    docstring; without them it is the weighted MSE at uniformly drawn timesteps.
    """
    scheduler = pipe.scheduler
    x0 = inputs["input_latents"]
    noise = inputs.get("noise")
    if noise is None or noise.shape != x0.shape:
        noise = torch.randn_like(x0)
    distance = _choice(LOSS_TYPES, inputs.get("loss_type") or "mse", "loss type")
    weighting = _choice(LOSS_WEIGHTINGS, inputs.get("loss_weighting") or "family", "loss weighting")
    if inputs.get("height") and inputs.get("width") and hasattr(scheduler, "set_training_resolution"):
        scheduler.set_training_resolution(int(inputs["height"]), int(inputs["width"]))
    timestep = scheduler.sample_timesteps(
        x0.shape[0],
        timestep_sampling(inputs),
        min_boundary=inputs.get("min_timestep_boundary", 0.0) or 0.0,
        max_boundary=inputs.get("max_timestep_boundary", 1.0) or 1.0,
    ).to(device=x0.device)
    model_inputs = dict(inputs)
    model_inputs["latents"] = scheduler.add_noise(x0, noise, timestep)
    model_inputs["timestep"] = timestep.to(dtype=x0.dtype)
    target = scheduler.training_target(x0, noise, timestep)
    pred = pipe.model_fn(**model_inputs)
    delta = float(inputs.get("huber_delta") or 1.0)
    per_sample = distance(pred.float(), target.float(), delta).flatten(1).mean(dim=1)
    weight = weighting(scheduler, timestep).float()
    return (per_sample * weight).mean()
