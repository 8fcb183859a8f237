"""The units Qwen-Image-Edit adds to (or changes in) the Qwen-Image pipeline.

1. ``QwenImageEditUnit_EditImageEmbedder``: the edit image(s) resized as diffusers' edit
   pipelines resize them for the VAE (about ``edit_image_pixels`` = 1024x1024, the aspect kept,
   sides multiples of 32) -> ``edit_latents``, one normalised latent grid per input image;
   ``model_fn`` appends them to the image tokens with their own ``img_shapes`` entries.
2. ``QwenImageEditUnit_PromptEmbedder``: the prompt with the edit template, the image(s) given
   to Qwen2.5-VL's vision tower through the processor (``pixel_values``, ``image_grid_thw``);
   the 64 template tokens dropped. Qwen-Image-Edit gives the vision tower the same resized image
   as the VAE; the "plus" versions (2509, 2511) give it each image at about
   ``edit_vl_pixels`` = 384x384, announced as ``Picture N:`` in the prompt.

Both are pure functions of their declared inputs (``cacheable``). Edit images arrive as one
PIL image, a list of one sample's images, or (a batch) a list of such lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from diffsynth_core import ConfigError, PipelineUnit

from .latents import normalize
from .units import QwenImageUnit_PromptEmbedder, _grad_enabled_for

EDIT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, "
    "texture, objects, background), then explain how the user's text instruction should alter "
    "or modify the image. Generate a new image that meets the user's requirements while "
    "maintaining consistency with the original input where appropriate.<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
EDIT_TEMPLATE_DROP = 64  # tokens of the system part, as diffusers drops them
VISION_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"
VAE_PIXELS = 1024 * 1024  # diffusers' VAE_IMAGE_SIZE (and Qwen-Image-Edit's only size)
VL_PIXELS = 384 * 384  # diffusers' CONDITION_IMAGE_SIZE of the plus pipeline

Images = list[list[Any]]  # per sample, its edit images


def calculate_dimensions(target_area: int, ratio: float) -> tuple[int, int]:
    """(width, height) of about ``target_area`` pixels at ``ratio`` = w/h, multiples of 32."""
    width = math.sqrt(target_area * ratio)
    height = width / ratio
    return round(width / 32) * 32, round(height / 32) * 32


def per_sample(edit_image: Any, batch_size: int | None = None) -> Images:
    """Edit images as one list per sample; one sample's list serves a whole batch."""
    if edit_image is None:
        return []
    if not isinstance(edit_image, (list, tuple)):
        samples: Images = [[edit_image]]
    elif edit_image and isinstance(edit_image[0], (list, tuple)):
        samples = [list(s) for s in edit_image]
    else:
        samples = [list(edit_image)]
    if len(samples) == 1 and (batch_size or 1) > 1:
        samples = samples * int(batch_size or 1)
    return samples


def check_count(samples: Images, max_images: int, family: str) -> None:
    """Each sample has 1..max_images edit images, and all the same number (a batch)."""
    counts = sorted({len(s) for s in samples}) or [0]
    if counts[-1] > max_images:
        raise ConfigError(
            f"{family} takes at most {max_images} edit image(s), got {counts[-1]}"
            + ("; Qwen-Image-Edit-2509/2511 (--model qwen-image-edit-plus) take up to 3"
               if max_images == 1 else "")
        )  # fmt: skip
    if counts[0] == 0:
        raise ConfigError(f"{family} needs an edit image for every prompt (--edit-image FILE)")
    if len(counts) > 1:
        raise ConfigError(
            f"one batch mixes samples with {counts[0]} and {counts[-1]} edit images; "
            "use --batch-size 1 or give every row the same number of edit images"
        )


def image_processor() -> Any:
    """diffusers' VaeImageProcessor as the edit pipelines build it (lanczos resize)."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(vae_scale_factor=16)


def sizes(samples: Images, area: int) -> list[tuple[int, int]]:
    """(width, height) of each image position: from the first sample's image there (one batch
    is one size; edit pairs share their target's aspect, which the buckets group)."""
    return [calculate_dimensions(area, im.size[0] / im.size[1]) for im in samples[0]]


class QwenImageEditUnit_EditImageEmbedder(PipelineUnit):  # noqa: N801 - DiffSynth's unit names
    """``edit_image`` -> ``edit_latents``: per image position a ``(B, 16, h, w)`` grid."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("edit_image", "edit_image_pixels", "batch_size"),
            output_params=("edit_latents",),
            onload_model_names=("vae",),
            cacheable=True,  # a pure function of the images and the size
        )

    def process(
        self,
        pipe: Any,
        edit_image: Any = None,
        edit_image_pixels: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        samples = per_sample(edit_image, batch_size)
        check_count(samples, pipe.max_edit_images, pipe.edit_family)
        processor = image_processor()
        latents = []
        for position, (w, h) in enumerate(sizes(samples, edit_image_pixels or VAE_PIXELS)):
            images = [s[position] for s in samples]
            pixels = processor.preprocess(images, h, w).to(pipe.device, pipe.vae.dtype)
            latents.append(self.encode(pipe, pixels))
        return {"edit_latents": latents}

    @staticmethod
    def encode(pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(_grad_enabled_for(pipe.vae)):
            z = pipe.vae.encode(pixels[:, :, None]).latent_dist.mode()
        return normalize(z, pipe.vae).to(pipe.torch_dtype)


class QwenImageEditUnit_PromptEmbedder(QwenImageUnit_PromptEmbedder):  # noqa: N801
    """The prompt with the edit template and the edit images' vision tokens (see the module)."""

    template = EDIT_TEMPLATE
    drop_idx = EDIT_TEMPLATE_DROP

    def __init__(self) -> None:
        super().__init__()
        self.input_params = (*self.input_params, "edit_image_pixels", "edit_vl_pixels")

    def process(  # two more declared inputs than the base (a unit declares what it reads)
        self,
        pipe: Any,
        prompt: str | Sequence[str] | None,
        batch_size: int | None = None,
        max_sequence_length: int | None = None,
        edit_image: Any = None,
        edit_image_pixels: int | None = None,
        edit_vl_pixels: int | None = None,
    ) -> dict[str, torch.Tensor | None]:
        # no max_sequence_length cut: diffusers' edit pipelines keep every token
        prompts = [prompt or ""] if isinstance(prompt, str) or prompt is None else list(prompt)
        if len(prompts) == 1 and (batch_size or 1) > 1:  # one negative prompt for a batch
            prompts = prompts * int(batch_size or 1)
        samples = per_sample(edit_image, len(prompts))
        check_count(samples, pipe.max_edit_images, pipe.edit_family)
        labels, images = vision_inputs(
            samples, pipe.edit_plus, edit_image_pixels or VAE_PIXELS, edit_vl_pixels or VL_PIXELS
        )
        texts = [self.template.format(label + p) for label, p in zip(labels, prompts, strict=True)]
        inputs = pipe.processor(text=texts, images=images, padding=True, return_tensors="pt")
        return self.encode_vision_text(pipe, inputs.to(pipe.device))

    def encode_vision_text(self, pipe: Any, inputs: Any) -> dict[str, torch.Tensor | None]:
        """The processor's tokens and pixels through Qwen2.5-VL; the template prefix dropped."""
        with torch.set_grad_enabled(_grad_enabled_for(pipe.text_encoder)):
            out = pipe.text_encoder(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"],
                output_hidden_states=True,
            )
        emb, mask = self.strip_and_pad(out.hidden_states[-1], inputs["attention_mask"])
        emb = emb.to(pipe.torch_dtype)
        return {"prompt_emb": emb, "prompt_emb_mask": None if bool(mask.all()) else mask}

    def encode_with_images(self, pipe: Any, prompts: list[str], edit_image: Any) -> dict[str, Any]:
        """The base class's edit entry point: the default sizes."""
        return self.process(pipe, prompts, len(prompts), None, edit_image)


def vision_inputs(
    samples: Images, plus: bool, vae_area: int, vl_area: int
) -> tuple[list[str], list[Any]]:
    """Per sample the text before its prompt, and the flat list of images for the processor,
    resized as diffusers' edit pipeline of this version resizes them: Qwen-Image-Edit gives
    the vision tower the VAE's image; the plus versions each image at ``vl_area``, labelled."""
    processor = image_processor()
    if not plus:
        (w, h), *_ = sizes(samples, vae_area)
        return [VISION_TOKENS] * len(samples), [processor.resize(s[0], h, w) for s in samples]
    flat = []
    for sample in samples:
        for image in sample:
            w, h = calculate_dimensions(vl_area, image.size[0] / image.size[1])
            flat.append(processor.resize(image, h, w))
    labels = ["".join(f"Picture {i + 1}: {VISION_TOKENS}" for i in range(len(s))) for s in samples]
    return labels, flat


def edit_units() -> list[PipelineUnit]:
    """The edit units, in the order they run after Qwen-Image's image units."""
    return [QwenImageEditUnit_EditImageEmbedder(), QwenImageEditUnit_PromptEmbedder()]
