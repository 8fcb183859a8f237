"""FlowMatchScheduler: training timesteps and weights, inference sigmas, noising and stepping.

Flow matching interpolates ``x_t = (1 - sigma) * x0 + sigma * noise``; the model predicts the
velocity ``noise - x0``. Timesteps are ``1000 * sigma``. A family chooses how sigmas are
shifted toward noise:

* ``shift``: static shift ``s * sigma / (1 + (s - 1) * sigma)`` (Wan: 5 in training);
* ``use_dynamic_shifting``: the shift depends on the image's token count through ``mu``
  (Qwen-Image, as diffusers' ``FlowMatchEulerDiscreteScheduler``); ``training_mu`` fixes ``mu``
  for training;
* ``shift_terminal``: stretch the schedule so its last sigma is this value.

Training may override the family's choice (``--flow-shift``, ``--dynamic-shift``: see
:meth:`FlowMatchScheduler.configure_training`), and draws its timesteps by one of
:data:`TIMESTEP_SAMPLING` (``--timestep-sampling``, :meth:`FlowMatchScheduler.sample_timesteps`).
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
    # training: True = mu from each batch's token count (as inference), False = the static
    # training_shift / shift; None = the family's way (training_mu when use_dynamic_shifting)
    training_dynamic: bool | None = None
    token_pixels: int = 16  # an image token covers token_pixels^2 pixels (VAE 8 x patch 2)


# --timestep-sampling: how a training timestep is drawn. Each draws a position u in (0, 1) of
# the schedule (0 = the pure-noise end): the first three then take the schedule's timestep
# at that index (the family's shift applies); "sigmoid" takes sigma = 1 - u unshifted and
# "shift" the schedule's sigma at u, interpolated (musubi-tuner's two modes).
INDEXED = ("uniform", "logit_normal", "mode")
TIMESTEP_SAMPLING = (*INDEXED, "sigmoid", "shift")
SPELLINGS = {"logit-normal": "logit_normal"}


@dataclass(frozen=True)
class TimestepSampling:
    """A ``--timestep-sampling`` method and its parameters (the SD3 paper's and musubi's)."""

    method: str = "uniform"
    logit_mean: float = 0.0  # logit_normal: u = sigmoid(N(mean, std))
    logit_std: float = 1.0
    mode_scale: float = 1.29  # mode: u = 1 - v - s (cos^2(pi v / 2) - 1 + v), v ~ U(0, 1)
    sigmoid_scale: float = 1.0  # sigmoid, shift: u = sigmoid(scale * N(0, 1))

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", SPELLINGS.get(self.method, self.method))
        if self.method not in TIMESTEP_SAMPLING:
            raise ValueError(
                f"unknown timestep sampling {self.method!r} (use uniform or logit_normal, "
                "sigmoid, shift, mode)"
            )

    def positions(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` positions u in [0, 1] of the schedule, 0 = the pure-noise end."""
        if self.method == "logit_normal":
            # u toward noise first, as the draw of the first version (its numbers stay)
            # (float32, as the first version computed it: its draws stay bit for bit)
            z = torch.randn(n, generator=generator) * self.logit_std + self.logit_mean
            return 1 - torch.sigmoid(z)
        if self.method == "mode":
            v = torch.rand(n, generator=generator).double()
            return 1 - v - self.mode_scale * (torch.cos(math.pi * v / 2) ** 2 - 1 + v)
        if self.method in ("sigmoid", "shift"):
            return 1 - torch.sigmoid(self.sigmoid_scale * torch.randn(n, generator=generator)).double()
        return torch.rand(n, generator=generator).double()  # (uniform draws indices itself)


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
        self._training_seq_len: int | None = None
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
            mu = self._training_mu(mu, image_seq_len)
            sigmas = self._shift(base, mu, c.training_shift if c.training_shift is not None else c.shift)
            self.sigmas = sigmas.float()
            self.timesteps = self.sigmas * c.num_train_timesteps
            self.training_weights = self._bell_weights(self.timesteps)
            self._training_seq_len = image_seq_len  # what the schedule was made for
            return
        base = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64) * denoising_strength
        if c.use_dynamic_shifting and mu is None:
            if image_seq_len is None:
                raise ValueError("this schedule shifts with the image size: pass image_seq_len or mu")
            mu = calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        sigmas = self._shift(base, mu if c.use_dynamic_shifting else None, c.shift)
        self.timesteps = (sigmas * c.num_train_timesteps).float()
        self.sigmas = torch.cat([sigmas, torch.zeros(1, dtype=sigmas.dtype)]).float()

    def _training_mu(self, mu: float | None, image_seq_len: int | None) -> float | None:
        """The training schedule's ``mu``: None for a static shift."""
        c = self.config
        if c.training_dynamic is False:
            return None
        if c.training_dynamic or (c.use_dynamic_shifting and c.training_mu is None):
            if mu is None:
                seq = image_seq_len if image_seq_len is not None else c.base_image_seq_len
                mu = calculate_shift(seq, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
            return mu
        return c.training_mu if c.use_dynamic_shifting else None

    def configure_training(self, shift: float | None = None, dynamic: bool = False) -> None:
        """Override the family's training shift: a static ``shift`` (``--flow-shift``), or
        ``dynamic`` (``--dynamic-shift``): ``mu`` from each batch's token count, with this
        schedule's base/max shift, as the family's inference schedule computes it."""
        if shift is not None and dynamic:
            raise ValueError("a static training shift and a dynamic one exclude each other")
        if shift is not None:
            self.config.training_shift, self.config.training_dynamic = shift, False
        elif dynamic:
            self.config.training_dynamic = True
        self.set_timesteps(self.config.num_train_timesteps, training=True)

    def set_training_resolution(self, height: int, width: int) -> None:
        """Under a dynamic training shift, set the training schedule for this image size."""
        c = self.config
        if not c.training_dynamic:
            return
        seq = (height // c.token_pixels) * (width // c.token_pixels)
        if self._training_seq_len != seq or not self.training:
            self.set_timesteps(c.num_train_timesteps, training=True, image_seq_len=seq)

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
        method: str | TimestepSampling = "uniform",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One schedule index per sample, for the indexed methods (:data:`INDEXED`);
        ``[min_boundary, max_boundary)`` are fractions of the schedule (0 = pure noise end),
        into which the drawn positions are scaled. ``logit_normal`` draws the unshifted
        sigma from sigmoid(N(mean, std)) (SD3), then maps it through this schedule's shift."""
        sampling = method if isinstance(method, TimestepSampling) else TimestepSampling(method)
        if sampling.method not in INDEXED:
            raise ValueError(f"timestep sampling {sampling.method!r} draws no schedule index: use sample_timesteps")
        n = len(self.timesteps)
        lo = int(min_boundary * n)
        hi = max(lo + 1, int(max_boundary * n))
        if sampling.method == "uniform":
            return torch.randint(lo, hi, (batch_size,), generator=generator).to(device)
        u = sampling.positions(batch_size, generator)
        idx = lo + (u * (hi - 1 - lo)).float().round().long()
        return idx.clamp(lo, hi - 1).to(device)

    def sample_timesteps(
        self,
        batch_size: int,
        sampling: TimestepSampling | None = None,
        min_boundary: float = 0.0,
        max_boundary: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One training timestep per sample (``1000 * sigma``, float32, on the CPU) by
        ``sampling`` (default: uniform), within the boundaries (see the index method)."""
        sampling = sampling or TimestepSampling()
        if sampling.method in INDEXED:
            idx = self.sample_timestep_indices(batch_size, "cpu", min_boundary, max_boundary, sampling, generator)
            return self.timesteps[idx]
        u = min_boundary + sampling.positions(batch_size, generator) * (max_boundary - min_boundary)
        if sampling.method == "sigmoid":
            sigmas = 1 - u
        else:  # "shift": the schedule's own (shifted) sigma at position u, interpolated
            n = len(self.sigmas)
            at = (u * (n - 1)).clamp(0, n - 1)
            low = at.floor().long().clamp(max=n - 2)
            frac = at - low
            table = self.sigmas.double()
            sigmas = table[low] * (1 - frac) + table[low + 1] * frac
        return (sigmas * self.config.num_train_timesteps).float()

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
