"""The hook into the DiT: ControlNet residuals for every denoiser call.

The Qwen-Image pipeline's ``model_fn`` calls each entry of the input ``dit_extra_kwargs_fns``
as ``fn(pipe, tokens, sigma, inputs)`` and passes the returned dict on to the DiT.
:class:`ControlNetResiduals` runs every active control image through its ControlNet and returns
``controlnet_block_samples`` (residuals of several images summed block by block, as diffusers'
``QwenImageMultiControlNetModel`` sums them). A control image outside its start/end window, or
with scale 0, is not run at all; with none active it returns ``{}``, so the DiT sees exactly
the plain Qwen-Image call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffsynth_core import set_gradient_checkpointing

from .conditioning import ControlSettings
from .models import controlnets


def current_step(pipe: Any, sigma: torch.Tensor) -> tuple[int | None, int]:
    """(index of this denoising step, number of steps); ``(None, n)`` while training."""
    schedule = pipe.scheduler.timesteps
    if pipe.scheduler.training:
        return None, len(schedule)
    t = float(sigma.flatten()[0]) * pipe.scheduler.config.num_train_timesteps
    return int(torch.argmin((schedule.float().cpu() - t).abs())), len(schedule)


def follow_checkpointing(net: Any, dit: Any) -> None:
    """Give the ControlNet the DiT's gradient-checkpointing setting (``model_fn`` sets the
    DiT's from the training flags before calling us); switch only when it changes, since
    switching walks every module."""
    enabled = bool(getattr(dit, "gradient_checkpointing", False))
    # (enabled, offload, policy) as the Qwen-Image pipeline records it; without one: no offload
    state = getattr(dit, "_diffsynth_checkpointing", (enabled, False, "full"))
    if getattr(net, "_diffsynth_checkpointing", None) != state:
        set_gradient_checkpointing(net, *state)
        net._diffsynth_checkpointing = state


class ControlNetResiduals:
    """``fn(pipe, tokens, sigma, inputs) -> {"controlnet_block_samples": [...]}``.

    Reads ``control_latents`` (packed control tokens, one tensor per control image) and
    ``control_settings`` from ``inputs``. Under classifier-free guidance diffusers runs the
    ControlNet once per step, with the positive prompt, and adds the same residuals to both
    branches; the negative call of a step (same latents object, same sigma) reuses them here.
    """

    def __init__(self) -> None:
        self._cache: tuple[Any, float, list[torch.Tensor] | None] | None = None

    def __call__(
        self, pipe: Any, tokens: torch.Tensor, sigma: torch.Tensor, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        latents, sigma_value = inputs.get("latents"), float(sigma.flatten()[0])
        cache = self._cache
        if (
            cache is not None
            and cache[0] is latents
            and cache[1] == sigma_value
            and not torch.is_grad_enabled()
        ):
            samples = cache[2]
        else:
            samples = self.residuals(pipe, tokens, sigma, inputs)
            self._cache = (latents, sigma_value, samples)
        return {} if samples is None else {"controlnet_block_samples": samples}

    def residuals(
        self, pipe: Any, tokens: torch.Tensor, sigma: torch.Tensor, inputs: dict[str, Any]
    ) -> list[torch.Tensor] | None:
        """Summed block residuals of every active control image (None: none active)."""
        nets = controlnets(pipe)
        step, num_steps = current_step(pipe, sigma)
        total: list[torch.Tensor] | None = None
        settings: Sequence[ControlSettings] = inputs["control_settings"]
        for latents, setting in zip(inputs["control_latents"], settings, strict=True):
            scale = setting.factor(step, num_steps)
            if scale == 0.0:
                continue
            samples = self.run_one(pipe, nets[setting.net], tokens, latents, scale, sigma, inputs)
            total = (
                samples if total is None else [a + b for a, b in zip(total, samples, strict=True)]
            )
        return total

    @staticmethod
    def run_one(
        pipe: Any,
        net: Any,
        tokens: torch.Tensor,
        control: torch.Tensor,
        scale: float,
        sigma: torch.Tensor,
        inputs: dict[str, Any],
    ) -> list[torch.Tensor]:
        """One ControlNet call, with the arguments diffusers' ControlNet pipeline gives it."""
        follow_checkpointing(net, pipe.dit)
        n = control.shape[1]
        return net(
            hidden_states=tokens[:, :n],
            controlnet_cond=control.to(tokens.dtype),
            conditioning_scale=scale,
            timestep=sigma,
            encoder_hidden_states=inputs["prompt_emb"],
            encoder_hidden_states_mask=inputs.get("prompt_emb_mask"),
            img_shapes=[shapes[:1] for shapes in inputs["img_shapes"]],
            return_dict=False,
        )
