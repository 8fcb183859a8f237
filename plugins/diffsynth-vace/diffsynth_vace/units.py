"""The units of the Wan VACE pipeline, shared by inference and training.

Order: shape check -> reference images -> VACE context -> noise -> target video (training) ->
prompt. Every unit reads ``inputs_shared`` except the prompt unit, which runs once per CFG
branch. What each adds:

* ``WanVaceShapeCheck``: height/width rounded up to multiples of 16, frames to 4k+1 (down,
  as diffusers does);
* ``WanVaceReferenceImages``: ``reference_pixels`` (B, R, 3, H, W), each reference fitted on
  a white canvas;
* ``WanVaceConditioning``: ``vace_context`` (B, 96, R + T', h, w); without a control video the
  video is zeros and the mask all ones (diffusers' and DiffSynth-Studio's choice), so a plain
  text-to-video sample trains and generates through the same VACE path;
* ``WanVaceNoise``: ``noise`` (B, 16, R + T', h, w) in float32 from ``seed`` on
  ``rand_device``, and ``latents`` (the sampler's starting point);
* ``WanVaceInputVideo``: ``input_latents`` (x0 for the loss) from ``input_video``, with the
  references' latents prepended in time (DiffSynth-Studio's convention);
* ``WanVacePrompt``: ``context`` (B, 512, d) from the positive or negative prompt.

All but the noise are ``cacheable``: pure functions of their inputs (through frozen models), so
``diffsynth cache`` / ``--cache-features`` run the VAE and UMT5 once per sample.
"""

from __future__ import annotations

from typing import Any

import torch

from diffsynth_core import ConfigError, PipelineUnit

from .conditioning import (
    PATCH,
    TEMPORAL,
    encode_latents,
    fit_on_canvas,
    normalize_references,
    vace_context,
)
from .media import per_clip


class WanVaceShapeCheck(PipelineUnit):
    """Rounds the size to the model's multiples (16 px; frames 4k+1)."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("height", "width", "num_frames"),
            output_params=("height", "width", "num_frames"),
            cacheable=True,  # pure arithmetic; the units reading the size can then be cached
        )

    def process(self, pipe: Any, height: int, width: int, num_frames: int) -> dict[str, int]:
        height, width = pipe.check_resize_height_width(height, width)
        num_frames = max(num_frames // TEMPORAL * TEMPORAL + 1, 1)
        return {"height": height, "width": width, "num_frames": num_frames}


class WanVaceReferenceImages(PipelineUnit):
    """Reference images -> white canvases of the video size, in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("vace_reference_image", "height", "width", "batch_size"),
            output_params=("reference_pixels",),
            cacheable=True,
        )

    def process(
        self, pipe: Any, vace_reference_image: Any, height: int, width: int, batch_size: int | None
    ) -> dict[str, Any]:
        references = normalize_references(vace_reference_image, batch_size or 1)
        counts = {len(refs) for refs in references}
        if len(counts) > 1:
            raise ConfigError(
                f"every clip of a batch needs the same number of reference images, got {sorted(counts)}"
            )
        if not references[0]:
            return {"reference_pixels": None}
        canvases = [
            torch.stack(
                [fit_on_canvas(pipe.preprocess_reference(im), height, width) for im in refs]
            )
            for refs in references
        ]
        return {"reference_pixels": torch.stack(canvases)}


class WanVaceConditioning(PipelineUnit):
    """Control video + mask + references -> ``vace_context`` (the DiT's control input)."""

    def __init__(self) -> None:
        super().__init__(
            input_params=(
                "vace_video",
                "vace_video_mask",
                "reference_pixels",
                "height",
                "width",
                "num_frames",
                "batch_size",
            ),
            output_params=("vace_context",),
            cacheable=True,
            onload_model_names=("vae",),
        )
        self.zero_latents: dict[Any, torch.Tensor] = {}  # the frozen VAE's encoding of zeros

    def process(
        self,
        pipe: Any,
        vace_video: Any,
        vace_video_mask: Any,
        reference_pixels: Any,
        height: int,
        width: int,
        num_frames: int,
        batch_size: int | None,
    ) -> dict[str, Any]:
        batch = batch_size or 1
        videos, masks = per_clip(vace_video, batch), per_clip(vace_video_mask, batch)
        if any(m is not None and v is None for v, m in zip(videos, masks, strict=True)):
            raise ConfigError(
                "vace_video_mask needs a vace_video (the mask says which of its pixels to keep)"
            )
        # a missing control video is zeros (grey) and a missing mask all ones (generate all)
        video = pipe.clips_to_tensor(videos, height, width, fill=0.0, frames=num_frames)
        mask = pipe.clips_to_tensor(masks, height, width, fill=1.0, frames=num_frames)
        mask = ((mask + 1) / 2).clamp(0, 1)
        # `diffsynth cache` runs this unit without the DiT loaded: its patch size is every Wan
        # release's 1x2x2 then, and the context takes the pipeline's dtype (the DiT's)
        patch = pipe.dit.config.patch_size[1] if pipe.dit is not None else PATCH
        context = vace_context(pipe.vae, video, mask, reference_pixels, patch, self.zero_latents)
        return {"vace_context": context.to(pipe.torch_dtype)}


class WanVaceNoise(PipelineUnit):
    """Float32 noise in the latent shape (reference frames included), from a seed."""

    def __init__(self) -> None:
        super().__init__(
            input_params=(
                "height",
                "width",
                "num_frames",
                "reference_pixels",
                "batch_size",
                "seed",
                "rand_device",
            ),
            output_params=("noise", "latents"),
        )

    def process(
        self,
        pipe: Any,
        height: int,
        width: int,
        num_frames: int,
        reference_pixels: Any,
        batch_size: int | None,
        seed: int | None,
        rand_device: Any,
    ) -> dict[str, Any]:
        references = 0 if reference_pixels is None else reference_pixels.shape[1]
        frames = (num_frames - 1) // TEMPORAL + 1 + references
        shape = (batch_size or 1, pipe.dit.config.in_channels, frames, height // 8, width // 8)
        device = rand_device or "cpu"
        generator = None if seed is None else torch.Generator(device).manual_seed(seed)
        # float32 like diffusers: the sampler's state stays in full precision under bf16
        noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(
            pipe.device
        )
        return {"noise": noise, "latents": noise}


class WanVaceInputVideo(PipelineUnit):
    """Training target: the clip's latents, reference latents first (x0 of the loss)."""

    def __init__(self) -> None:
        super().__init__(
            input_params=(
                "input_video",
                "reference_pixels",
                "height",
                "width",
                "num_frames",
                "batch_size",
            ),
            output_params=("input_latents",),
            cacheable=True,
            onload_model_names=("vae",),
        )

    def process(
        self,
        pipe: Any,
        input_video: Any,
        reference_pixels: Any,
        height: int,
        width: int,
        num_frames: int,
        batch_size: int | None,
    ) -> dict[str, Any]:
        if input_video is None:
            return {}
        clips = per_clip(input_video, batch_size or 1)
        latents = encode_latents(
            pipe.vae, pipe.clips_to_tensor(clips, height, width, fill=0.0, frames=num_frames)
        )
        if reference_pixels is not None:
            refs = [
                encode_latents(pipe.vae, reference_pixels[:, r, :, None])
                for r in range(reference_pixels.shape[1])
            ]
            latents = torch.cat([*refs[::-1], latents], dim=2)
        return {"input_latents": latents.to(pipe.torch_dtype)}


class WanVacePrompt(PipelineUnit):
    """UMT5 embeddings of the prompt (positive branch) or negative prompt (negative branch)."""

    def __init__(self) -> None:
        super().__init__(
            separate_cfg=True,
            input_params=("batch_size",),
            input_params_posi={"prompt": "prompt"},
            input_params_nega={"prompt": "negative_prompt"},
            output_params=("context",),
            cacheable=True,
            onload_model_names=("text_encoder",),
        )

    def process(
        self, pipe: Any, prompt: str | list[str] | None, batch_size: int | None
    ) -> dict[str, torch.Tensor]:
        prompts = (
            [prompt or ""] * (batch_size or 1)
            if prompt is None or isinstance(prompt, str)
            else prompt
        )
        return {"context": pipe.encode_prompt(prompts)}


def default_units() -> list[PipelineUnit]:
    return [
        WanVaceShapeCheck(),
        WanVaceReferenceImages(),
        WanVaceConditioning(),
        WanVaceNoise(),
        WanVaceInputVideo(),
        WanVacePrompt(),
    ]
