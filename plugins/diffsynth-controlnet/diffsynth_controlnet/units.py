"""The unit this plugin adds to the Qwen-Image pipeline (through ``diffsynth_pipeline_units``).

``QwenImageUnit_ControlImageEmbedder`` turns ``control_image`` (and ``control_mask`` for an
inpainting ControlNet) into packed VAE latents, exactly as diffusers' ControlNet pipelines
build them; ``QwenImageUnit_ControlNet`` appends
:class:`~diffsynth_controlnet.pipeline.ControlNetResiduals` to the input
``dit_extra_kwargs_fns``, the Qwen-Image pipeline's hook into its DiT call. The same units run
in training (one control image per sample) and in inference (one image per ControlNet, or
several for one Union ControlNet, each applied to the whole batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffsynth_core import ConfigError, PipelineUnit
from diffsynth_qwen_image.latents import normalize, pack_latents

from .conditioning import as_image_list, binarize_mask, control_settings, fit_to_target
from .models import (
    attach_controlnets,
    controlnets,
    load_controlnet,
    new_controlnet,
    new_source,
    split_sources,
)
from .pipeline import ControlNetResiduals

INPAINT_CHANNELS = 4  # one mask channel, packed 2x2


def encode_pixels(pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels ``(B, 3, H, W)`` in [-1, 1] -> normalised latents ``(B, 16, H/8, W/8)``.

    The latent mode, not a sample: the control signal should not depend on a random draw
    (diffusers samples it; with a real VAE the difference is far below the VAE's noise).
    """
    vae = pipe.vae
    latents = vae.encode(
        pixels.to(device=pipe.device, dtype=vae.dtype)[:, :, None]
    ).latent_dist.mode()
    return normalize(latents, vae).to(pipe.torch_dtype)


def mask_tensor(masks: list[Any]) -> torch.Tensor:
    """Binarised PIL masks -> ``(B, 1, H, W)`` floats, 1 where the image is repainted."""
    return torch.stack([torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0) for m in masks])[
        :, None
    ]


def mask_channel(pipe: Any, mask: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The mask at latent size, 1 where the image is kept (diffusers' ``1 - mask`` after a
    nearest-neighbour resize)."""
    small = torch.nn.functional.interpolate(mask, size=size)
    return (1.0 - small).to(device=pipe.device, dtype=pipe.torch_dtype)


def control_tokens(pipe: Any, images: list[Any], masks: list[Any] | None) -> torch.Tensor:
    """Packed control tokens ``(B, tokens, 64)``, or ``(B, tokens, 68)`` with a mask."""
    pixels = pipe.preprocess_image(images)
    if masks is None:
        return pack_latents(encode_pixels(pipe, pixels))
    mask = mask_tensor(masks).to(pixels.device)
    pixels = pixels.masked_fill(mask > 0.5, -1.0)  # the area to repaint is hidden from the net
    latents = encode_pixels(pipe, pixels)
    return pack_latents(torch.cat([latents, mask_channel(pipe, mask, latents.shape[-2:])], dim=1))


class QwenImageUnit_ControlImageEmbedder(PipelineUnit):  # noqa: N801 - DiffSynth's unit names
    """Control image(s) (+ mask) -> ``control_latents``, one packed tensor per control image.

    ``cacheable``: a pure function of its inputs (the VAE is frozen), so ``--cache-features``
    encodes each training sample's control image once.
    """

    def __init__(self) -> None:
        super().__init__(
            input_params=(
                "control_image",
                "control_mask",
                "controlnet",
                "controlnet_layers",
                "controlnet_inpaint",
                "height",
                "width",
                "batch_size",
            ),
            output_params=("control_latents",),
            onload_model_names=("vae",),
            cacheable=True,
        )

    def process(
        self,
        pipe: Any,
        control_image: Any = None,
        control_mask: Any = None,
        controlnet: Any = None,
        controlnet_layers: int | None = None,
        controlnet_inpaint: bool = False,
        height: int = 1024,
        width: int = 1024,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        images = as_image_list(control_image)
        if not images:
            return {}  # no control image: the plain Qwen-Image pipeline
        ensure_controlnets(pipe, controlnet, controlnet_layers, controlnet_inpaint)
        per_sample = pipe.scheduler.training  # a training batch holds one control per sample
        groups = [images] if per_sample else [[im] * (batch_size or 1) for im in images]
        masks = self.masks(pipe, control_mask, width, height, len(groups[0]))
        fitted = [[fit_to_target(im, width, height) for im in group] for group in groups]
        return {"control_latents": [control_tokens(pipe, group, masks) for group in fitted]}

    @staticmethod
    def masks(
        pipe: Any, control_mask: Any, width: int, height: int, count: int
    ) -> list[Any] | None:
        """Binarised masks at the target size when the ControlNet takes one; errors otherwise."""
        wants = [n.config.extra_condition_channels == INPAINT_CHANNELS for n in controlnets(pipe)]
        given = as_image_list(control_mask)
        if any(wants) and not given:
            raise ConfigError(
                "this is an inpainting ControlNet: give a control_mask (white = repaint)"
            )
        if given and not all(wants):
            raise ConfigError(
                "control_mask was given but the ControlNet takes no mask (not an inpainting one)"
            )
        if not given:
            return None
        fitted = [binarize_mask(fit_to_target(m, width, height, "control mask")) for m in given]
        return fitted * count if len(fitted) == 1 else fitted


class QwenImageUnit_ControlNet(PipelineUnit):  # noqa: N801
    """``control_latents`` + scale/start/end -> ``control_settings``, and the DiT hook:
    :class:`ControlNetResiduals` appended to ``dit_extra_kwargs_fns``."""

    def __init__(self) -> None:
        super().__init__(
            input_params=(
                "control_latents", "controlnet", "controlnet_layers", "controlnet_inpaint",
                "controlnet_scale", "control_start", "control_end", "dit_extra_kwargs_fns",
            ),
            output_params=("control_settings", "dit_extra_kwargs_fns"),
            onload_model_names=("controlnet",),
        )  # fmt: skip

    def process(
        self,
        pipe: Any,
        control_latents: list[torch.Tensor] | None = None,
        controlnet: Any = None,
        controlnet_layers: int | None = None,
        controlnet_inpaint: bool = False,
        controlnet_scale: Any = None,
        control_start: Any = None,
        control_end: Any = None,
        dit_extra_kwargs_fns: list[Any] | None = None,
    ) -> dict[str, Any]:
        if not control_latents:
            return {}
        # the embedder may have been answered from the feature cache: check here too
        ensure_controlnets(pipe, controlnet, controlnet_layers, controlnet_inpaint)
        settings = control_settings(
            len(control_latents), len(controlnets(pipe)),
            _or(controlnet_scale, 1.0), _or(control_start, 0.0), _or(control_end, 1.0),
        )  # fmt: skip
        fns = [*(dit_extra_kwargs_fns or []), ControlNetResiduals()]
        return {"control_settings": settings, "dit_extra_kwargs_fns": fns}


def control_units() -> list[PipelineUnit]:
    """The units this plugin adds to the Qwen-Image pipeline, in order."""
    return [QwenImageUnit_ControlImageEmbedder(), QwenImageUnit_ControlNet()]


def wanted_sources(
    controlnet: Any, controlnet_layers: int | None, inpaint: bool = False
) -> list[str]:
    """What the options ask for: ControlNet paths, or a new ControlNet of N blocks."""
    if split_sources(controlnet):
        return split_sources(controlnet)
    return [new_source(int(controlnet_layers), inpaint)] if controlnet_layers else []


def ensure_controlnets(
    pipe: Any, controlnet: Any = None, controlnet_layers: int | None = None, inpaint: bool = False
) -> None:
    """Attach the ControlNets the options name unless they are attached already (they are when
    the options were given at load time, as the CLI does; a Python caller may name them only in
    the call); error when there is none at all."""
    wanted = wanted_sources(controlnet, controlnet_layers, inpaint)
    if wanted and tuple(wanted) != tuple(getattr(pipe, "controlnet_sources", ())):
        if pipe.scheduler.training:
            raise ConfigError(LOAD_TIME_ONLY)
        if split_sources(controlnet):
            models = [load_controlnet(s, pipe.dit, pipe.torch_dtype) for s in wanted]
        else:
            models = [new_controlnet(pipe.dit, int(controlnet_layers or 0), inpaint)]
        attach_controlnets(pipe, models, wanted)
    if not controlnets(pipe):
        why = getattr(pipe, "controlnet_error", None)
        raise ConfigError(
            "a control image was given but no ControlNet is loaded: pass --controlnet DIR "
            "(or --controlnet-layers N to train a new one)"
            + (f"; loading the default one failed: {why}" if why else "")
        )


LOAD_TIME_ONLY = (
    "in training, the ControlNet options must be given when the pipeline is loaded, before the "
    "optimizer is built (a ControlNet attached now would not be trained): `diffsynth train` does "
    "so; from Python, load with load_pipeline(..., options={'controlnet': ...}) or "
    "diffsynth_controlnet.load_controlnet_pipeline(controlnet=..., controlnet_layers=...)"
)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
