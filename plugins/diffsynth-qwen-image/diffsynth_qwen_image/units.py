"""The Qwen-Image pipeline units, in the order they run (inference and training alike).

1. ``QwenImageUnit_ShapeChecker``: height and width rounded up to multiples of 16.
2. ``QwenImageUnit_NoiseInitializer``: the initial noise (seeded on ``rand_device``), or the
   user's ``latents``.
3. ``QwenImageUnit_InputImageEmbedder``: ``input_image`` -> ``input_latents`` (VAE, normalised).
4. ``QwenImageUnit_StartLatents``: ``latents`` to denoise from: the noise, or for img2img the
   input latents noised to ``denoising_strength``.
5. ``QwenImageUnit_PromptEmbedder`` (once per CFG branch): prompt -> ``prompt_emb`` and
   ``prompt_emb_mask`` through Qwen2.5-VL with the Qwen-Image chat template.

The image and prompt embedders are ``cacheable`` (pure functions of their inputs), so
``--cache-features`` can run them once per sample. Qwen-Image-Edit fits in without changing these: a unit encoding ``edit_image`` into
``edit_latents`` (``model_fn`` already appends them to the image tokens), and a subclass of the
prompt embedder with the edit template that feeds the image to the vision tower (``edit_image``
already reaches ``process``): :mod:`.edit_units` does this for the edit families.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffsynth_core import PipelineUnit

from .latents import as_latent_grid, latent_size

PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
PROMPT_TEMPLATE_DROP = 34  # tokens of the template before the prompt: never seen by the DiT
TOKENIZER_MAX_LENGTH = 1024


def _grad_enabled_for(model: torch.nn.Module) -> bool:
    """Frozen encoders run without autograd; one being trained keeps its graph."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())


class QwenImageUnit_ShapeChecker(PipelineUnit):  # noqa: N801 - DiffSynth's unit names
    """Round ``height`` / ``width`` up to the pipeline's multiples (16 for Qwen-Image)."""

    def __init__(self) -> None:
        # cacheable (pure arithmetic): the units reading the size (a control image) can be cached
        super().__init__(input_params=("height", "width"), output_params=("height", "width"), cacheable=True)

    def process(self, pipe: Any, height: int, width: int) -> dict[str, int]:
        height, width = pipe.check_resize_height_width(height, width)
        return {"height": height, "width": width}


class QwenImageUnit_NoiseInitializer(PipelineUnit):  # noqa: N801
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
        shape = (batch_size or 1, 16, h, w)
        return {"noise": pipe.generate_noise(shape, seed=seed, rand_device=rand_device or "cpu")}


class QwenImageUnit_InputImageEmbedder(PipelineUnit):  # noqa: N801
    """``input_image`` (PIL or list of PIL) -> normalised ``input_latents`` (VAE latent mode)."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("input_image",),
            output_params=("input_latents",),
            onload_model_names=("vae",),
        )
        self.cacheable = True  # a pure function of the image: --cache-features may reuse it

    def process(self, pipe: Any, input_image: Any) -> dict[str, torch.Tensor]:
        if input_image is None:
            return {}
        return {"input_latents": pipe.encode_image(input_image)}


class QwenImageUnit_StartLatents(PipelineUnit):  # noqa: N801
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


class QwenImageUnit_PromptEmbedder(PipelineUnit):  # noqa: N801
    """Prompt(s) -> ``prompt_emb`` ``(B, L, D)`` and ``prompt_emb_mask`` (``None`` if all valid).

    Exactly diffusers' ``encode_prompt``: the chat template, the last hidden state of the
    text model, the first 34 (template) tokens dropped, padding to the longest prompt.
    Subclasses for other templates (Qwen-Image-Edit) override ``template`` / ``drop_idx`` and
    :meth:`encode_with_images`.
    """

    template = PROMPT_TEMPLATE
    drop_idx = PROMPT_TEMPLATE_DROP

    def __init__(self) -> None:
        super().__init__(
            separate_cfg=True,
            input_params=("batch_size", "max_sequence_length", "edit_image"),
            input_params_posi={"prompt": "prompt"},
            input_params_nega={"prompt": "negative_prompt"},
            output_params=("prompt_emb", "prompt_emb_mask"),
            onload_model_names=("text_encoder",),
        )
        self.cacheable = True  # a pure function of the prompt

    def process(
        self,
        pipe: Any,
        prompt: str | Sequence[str] | None,
        batch_size: int | None = None,
        max_sequence_length: int | None = None,
        edit_image: Any = None,
    ) -> dict[str, torch.Tensor | None]:
        prompts = [prompt or ""] if isinstance(prompt, str) or prompt is None else list(prompt)
        if len(prompts) == 1 and (batch_size or 1) > 1:  # one negative prompt for a batch
            prompts = prompts * batch_size  # type: ignore[operator]
        if edit_image is not None:
            return self.encode_with_images(pipe, prompts, edit_image)
        with torch.set_grad_enabled(_grad_enabled_for(pipe.text_encoder)):
            emb, mask = self.encode(pipe, prompts)
        limit = max_sequence_length or 512
        emb, mask = emb[:, :limit], mask[:, :limit]
        return {"prompt_emb": emb, "prompt_emb_mask": None if bool(mask.all()) else mask}

    def encode(self, pipe: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings after the template prefix, zero-padded, and their 0/1 mask."""
        tokens = pipe.tokenizer(
            [self.template.format(p) for p in prompts],
            max_length=TOKENIZER_MAX_LENGTH + self.drop_idx,
            padding=True,
            truncation=True,
            return_tensors="pt",
        ).to(pipe.device)
        out = pipe.text_encoder(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            output_hidden_states=True,
        )
        return self.strip_and_pad(out.hidden_states[-1], tokens.attention_mask)

    def strip_and_pad(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep each prompt's valid tokens minus the template prefix; pad to the longest."""
        keep = mask.bool()
        parts = [h[k][self.drop_idx :] for h, k in zip(hidden, keep, strict=True)]
        longest = max(p.shape[0] for p in parts)
        emb = torch.stack(
            [torch.cat([p, p.new_zeros(longest - p.shape[0], p.shape[1])]) for p in parts]
        )
        valid = torch.stack(
            [torch.arange(longest, device=hidden.device) < p.shape[0] for p in parts]
        ).long()
        return emb, valid

    def encode_with_images(self, pipe: Any, prompts: list[str], edit_image: Any) -> dict[str, Any]:
        """The Qwen-Image-Edit path (vision tokens in the prompt): provided by an edit plugin."""
        raise NotImplementedError(
            "edit_image needs the Qwen-Image-Edit prompt template and the Qwen2.5-VL image "
            "processor; subclass QwenImageUnit_PromptEmbedder (template, drop_idx, "
            "encode_with_images) in a plugin that provides Qwen-Image-Edit"
        )


def default_units() -> list[PipelineUnit]:
    """The units of the Qwen-Image pipeline, in order."""
    return [
        QwenImageUnit_ShapeChecker(),
        QwenImageUnit_NoiseInitializer(),
        QwenImageUnit_InputImageEmbedder(),
        QwenImageUnit_StartLatents(),
        QwenImageUnit_PromptEmbedder(),
    ]
