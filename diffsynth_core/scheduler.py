"""FlowMatchScheduler: training timesteps and weights, inference sigmas, noising and stepping.

Flow matching interpolates ``x_t = (1 - sigma) * x0 + sigma * noise``; the model predicts the
velocity ``noise - x0``. Timesteps are ``1000 * sigma``. A family chooses how sigmas are
shifted toward noise:

* ``shift``: static shift ``s * sigma / (1 + (s - 1) * sigma)`` (Wan: 5 in training);
* ``use_dynamic_shifting``: the shift depends on the image's token count through ``mu``
  (Qwen-Image, as diffusers' ``FlowMatchEulerDiscreteScheduler``); ``training_mu`` fixes ``mu``
  for training;
* ``shift_terminal``: stretch the schedule so its last sigma is this value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class FlowMatchConfig:
    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    time_shift_type: str = "exponential"  # or "linear"
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    shift_terminal: float | None = None
    training_mu: float | None = None
    training_shift: float | None = None  # static shift used in training (defaults to shift)


def calculate_shift(image_seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float, max_shift: float) -> float:
    """``mu`` grows linearly with the number of image tokens (as in diffusers)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + base_shift - m * base_seq_len


class FlowMatchScheduler:
    """Training and inference schedule of a flow-matching model (see the module docstring)."""

    def __init__(self, config: FlowMatchConfig | None = None, **overrides: float | bool | str | None) -> None:
        base = config or FlowMatchConfig()
        self.config = FlowMatchConfig(**{**base.__dict__, **overrides})
        self.training = False
        self.set_timesteps(self.config.num_train_timesteps, training=True)

    # -- schedules -----------------------------------------------------------------------

    def _shift(self, sigmas: torch.Tensor, mu: float | None, shift: float) -> torch.Tensor:
        c = self.config
        if mu is not None:
            if c.time_shift_type == "exponential":
                sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
            else:
                sigmas = mu / (mu + (1 / sigmas - 1))
        else:
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        if c.shift_terminal:
            one_minus = 1 - sigmas
            scale = one_minus[-1] / (1 - c.shift_terminal)
            sigmas = 1 - one_minus / scale
        return sigmas

    def set_timesteps(
        self,
        num_inference_steps: int,
        denoising_strength: float = 1.0,
        training: bool = False,
        image_seq_len: int | None = None,
        mu: float | None = None,
    ) -> None:
        """Fill ``self.sigmas`` (with a trailing 0 for inference) and ``self.timesteps``.

        Inference starts at ``sigma = denoising_strength`` and takes ``num_inference_steps``
        equal steps down to ``strength / n`` before shifting, like diffusers' Qwen-Image
        pipeline. Training uses ``num_train_timesteps`` points from 1 toward 0.
        """
        c = self.config
        n = num_inference_steps
        self.training = training
        if training:
            base = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1]
            if c.use_dynamic_shifting:
                mu = c.training_mu if c.training_mu is not None else mu
                if mu is None:
                    mu = calculate_shift(c.base_image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
            sigmas = self._shift(base, mu, c.training_shift if c.training_shift is not None else c.shift)
            self.sigmas = sigmas.float()
            self.timesteps = self.sigmas * c.num_train_timesteps
            self.training_weights = self._bell_weights(self.timesteps)
            return
        base = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64) * denoising_strength
        if c.use_dynamic_shifting and mu is None:
            if image_seq_len is None:
                raise ValueError("this schedule shifts with the image size: pass image_seq_len or mu")
            mu = calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        sigmas = self._shift(base, mu if c.use_dynamic_shifting else None, c.shift)
        self.timesteps = (sigmas * c.num_train_timesteps).float()
        self.sigmas = torch.cat([sigmas, torch.zeros(1, dtype=sigmas.dtype)]).float()

    @staticmethod
    def _bell_weights(timesteps: torch.Tensor) -> torch.Tensor:
        """exp(-2((t - 500) / 1000)^2) minus its minimum, normalised to mean 1."""
        y = torch.exp(-2 * ((timesteps - 500) / 1000) ** 2)
        y = y - y.min()
        return y * (len(timesteps) / y.sum())

    # -- training ------------------------------------------------------------------------

    def sample_timestep_indices(
        self,
        batch_size: int,
        device: str | torch.device = "cpu",
        min_boundary: float = 0.0,
        max_boundary: float = 1.0,
        method: str = "uniform",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One schedule index per sample; ``[min_boundary, max_boundary)`` are fractions of the
        schedule (0 = pure noise end). ``logit_normal`` draws the unshifted sigma from
        sigmoid(N(0, 1)) (SD3), then maps it through this schedule's shift."""
        n = len(self.timesteps)
        lo = int(min_boundary * n)
        hi = max(lo + 1, int(max_boundary * n))
        if method == "uniform":
            return torch.randint(lo, hi, (batch_size,), generator=generator).to(device)
        if method == "logit_normal":
            u = torch.sigmoid(torch.randn(batch_size, generator=generator))
            idx = ((1 - u) * (n - 1)).round().long()
            return idx.clamp(lo, hi - 1).to(device)
        raise ValueError(f"unknown timestep sampling {method!r} (use uniform or logit_normal)")

    def training_weight(self, timestep: torch.Tensor) -> torch.Tensor:
        idx = torch.argmin((self.timesteps.to(timestep.device)[None, :] - timestep.float()[:, None]).abs(), dim=1)
        return self.training_weights.to(timestep.device)[idx]

    def _sigma(self, timestep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        sigma = (timestep.float() / self.config.num_train_timesteps).to(like.device)
        return sigma.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        sigma = self._sigma(timestep, original_samples)
        return ((1 - sigma) * original_samples.float() + sigma * noise.float()).to(original_samples.dtype)

    @staticmethod
    def training_target(sample: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return noise - sample

    # -- inference -----------------------------------------------------------------------

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor | float, sample: torch.Tensor) -> torch.Tensor:
        """One Euler step from ``timestep`` to the next sigma of the schedule."""
        t = torch.as_tensor(timestep, dtype=torch.float32).flatten()[0].cpu()
        i = int(torch.argmin((self.timesteps.cpu() - t).abs()))
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        prev = sample.float() + model_output.float() * float(sigma_next - sigma)
        return prev.to(sample.dtype)
