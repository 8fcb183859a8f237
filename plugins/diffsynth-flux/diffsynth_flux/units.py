"""The FLUX.1 pipeline units, in the order they run (inference and training alike).

1. ``FluxUnit_ShapeChecker``: height and width rounded up to multiples of 16.
2. ``FluxUnit_NoiseInitializer``: the initial noise ``(B, 16, H/8, W/8)`` (seeded on
   ``rand_device``), or the user's ``latents``.
3. ``FluxUnit_InputImageEmbedder``: ``input_image`` -> ``input_latents`` (VAE mode, normalised).
4. ``FluxUnit_StartLatents``: the noise, or for img2img the input latents noised to
   ``denoising_strength``.
5. ``FluxUnit_PromptEmbedder`` (once per CFG branch): prompt -> ``prompt_emb`` (T5 hidden
   states, padded to ``max_sequence_length``) and ``pooled_prompt_emb`` (CLIP's pooled output,
   77 tokens).

The image and prompt embedders are ``cacheable`` (pure functions of their inputs), so
``--cache-features`` can run them once per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._core import ConfigError, PipelineUnit
from .latents import CHANNELS, as_latent_grid, latent_size

CLIP_MAX_LENGTH = 77


def _grad_enabled_for(model: torch.nn.Module) -> bool:
    """Frozen encoders run without autograd; one being trained keeps its graph."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())


class FluxUnit_ShapeChecker(PipelineUnit):  # noqa: N801 - DiffSynth's unit names
    """Round ``height`` / ``width`` up to the pipeline's multiples (16 for FLUX.1)."""

    def __init__(self) -> None:
        super().__init__(input_params=("height", "width"), output_params=("height", "width"))

    def process(self, pipe: Any, height: int, width: int) -> dict[str, int]:
        height, width = pipe.check_resize_height_width(height, width)
        return {"height": height, "width": width}


class FluxUnit_NoiseInitializer(PipelineUnit):  # noqa: N801
    """Gaussian noise ``(B, 16, H/8, W/8)`` from ``seed``, or the user's ``latents``."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("height", "width", "seed", "rand_device", "batch_size", "latents"),
            output_params=("noise",),
        )

    def process(
        self,
        pipe: Any,
        height: int,
        width: int,
        seed: int | None = None,
        rand_device: str | torch.device | None = None,
        batch_size: int | None = None,
        latents: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if latents is not None:
            noise = as_latent_grid(latents, height, width)
            return {"noise": noise.to(device=pipe.device, dtype=pipe.torch_dtype)}
        h, w = latent_size(height, width)
        shape = (batch_size or 1, CHANNELS, h, w)
        return {"noise": pipe.generate_noise(shape, seed=seed, rand_device=rand_device or "cpu")}


class FluxUnit_InputImageEmbedder(PipelineUnit):  # noqa: N801
    """``input_image`` (PIL or list of PIL) -> normalised ``input_latents`` (VAE latent mode)."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("input_image",),
            output_params=("input_latents",),
            onload_model_names=("vae",),
            cacheable=True,
        )

    def process(self, pipe: Any, input_image: Any) -> dict[str, torch.Tensor]:
        if input_image is None:
            return {}
        return {"input_latents": pipe.encode_image(input_image)}


class FluxUnit_StartLatents(PipelineUnit):  # noqa: N801
    """The latents denoising starts from: the noise, or for img2img the input image's latents
    noised to the first sigma of the schedule (which ``denoising_strength`` sets)."""

    def __init__(self) -> None:
        super().__init__(input_params=("noise", "input_latents"), output_params=("latents",))

    def process(
        self, pipe: Any, noise: torch.Tensor, input_latents: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        if input_latents is None or pipe.scheduler.training:
            return {"latents": noise}
        start = pipe.scheduler.timesteps[:1].to(noise.device)
        return {"latents": pipe.scheduler.add_noise(input_latents, noise, start)}


class FluxUnit_PromptEmbedder(PipelineUnit):  # noqa: N801
    """Prompt(s) -> ``prompt_emb`` ``(B, max_sequence_length, D)`` and ``pooled_prompt_emb``
    ``(B, 768)``: exactly diffusers' ``FluxPipeline.encode_prompt`` (both tokenizers pad to
    their maximum length, no attention masks: the pads are part of FLUX.1's conditioning)."""

    def __init__(self) -> None:
        super().__init__(
            separate_cfg=True,
            input_params=("batch_size", "max_sequence_length"),
            input_params_posi={"prompt": "prompt"},
            input_params_nega={"prompt": "negative_prompt"},
            output_params=("prompt_emb", "pooled_prompt_emb"),
            onload_model_names=("text_encoder", "text_encoder_2"),
            cacheable=True,
        )

    def process(
        self,
        pipe: Any,
        prompt: str | Sequence[str] | None,
        batch_size: int | None = None,
        max_sequence_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        prompts = [prompt or ""] if isinstance(prompt, str) or prompt is None else list(prompt)
        if len(prompts) == 1 and (batch_size or 1) > 1:  # one negative prompt for a batch
            prompts = prompts * batch_size  # type: ignore[operator]
        length = max_sequence_length or pipe.variant.max_sequence_length
        if length > pipe.variant.max_sequence_length:
            raise ConfigError(
                f"--max-sequence-length {length} is over {pipe.variant.family}'s "
                f"{pipe.variant.max_sequence_length} (the T5 tokens it was trained with); use at most that"
            )
        return {
            "pooled_prompt_emb": self.clip(pipe, prompts),
            "prompt_emb": self.t5(pipe, prompts, length),
        }

    def clip(self, pipe: Any, prompts: list[str]) -> torch.Tensor:
        """CLIP-L's pooled output (the end-of-text token after the final norm)."""
        tokens = pipe.tokenizer(
            prompts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True,
            return_tensors="pt",
        ).input_ids.to(pipe.device)  # fmt: skip
        with torch.set_grad_enabled(_grad_enabled_for(pipe.text_encoder)):
            out = pipe.text_encoder(tokens, output_hidden_states=False)
        return out.pooler_output.to(pipe.torch_dtype)

    def t5(self, pipe: Any, prompts: list[str], length: int) -> torch.Tensor:
        """T5's last hidden states over the prompt padded to ``length`` tokens."""
        tokens = pipe.tokenizer_2(
            prompts, padding="max_length", max_length=length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(pipe.device)  # fmt: skip
        with torch.set_grad_enabled(_grad_enabled_for(pipe.text_encoder_2)):
            out = pipe.text_encoder_2(tokens, output_hidden_states=False)[0]
        return out.to(pipe.torch_dtype)


def default_units() -> list[PipelineUnit]:
    """The units of the FLUX.1 pipeline, in order."""
    return [
        FluxUnit_ShapeChecker(),
        FluxUnit_NoiseInitializer(),
        FluxUnit_InputImageEmbedder(),
        FluxUnit_StartLatents(),
        FluxUnit_PromptEmbedder(),
    ]
