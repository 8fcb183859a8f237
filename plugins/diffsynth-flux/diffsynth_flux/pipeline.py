"""FluxPipeline: diffusers' FLUX.1 models driven by diffsynth's units.

The models are the real ones (``FluxTransformer2DModel`` as ``dit``, ``AutoencoderKL`` as
``vae``, ``CLIPTextModel`` as ``text_encoder``, ``T5EncoderModel`` as ``text_encoder_2``); the
schedule is the core's :class:`FlowMatchScheduler` with FLUX.1's settings (dev: the shift
grows with the image's token count, ``mu`` from 0.5 at 256 tokens to 1.15 at 4096; schnell:
no shift). For the same weights, prompt and noise the output equals diffusers'
``FluxPipeline`` (tested on the tiny presets of both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ._core import BasePipeline, FlowMatchConfig, FlowMatchScheduler, set_gradient_checkpointing
from .family import DEV, VARIANTS, FluxVariant
from .latents import denormalize, image_ids, normalize, pack_latents, text_ids, unpack_latents
from .units import default_units

if TYPE_CHECKING:  # untyped libraries: these names are Any to a type checker
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

# DiffSynth-Studio trains FLUX.1 with a static shift of 3 (the ``shift`` of the official
# scheduler_config.json of dev); with the exponential shift that is mu = ln 3.
TRAINING_SHIFT = 3.0


def flux_scheduler(config: Mapping[str, Any] | None, variant: FluxVariant) -> FlowMatchScheduler:
    """The core scheduler set up from a diffusers ``scheduler_config.json`` (or the official one)."""
    from .tiny import scheduler_config

    c = {**scheduler_config(variant.family), **(config or {})}
    fields = set(FlowMatchConfig.__dataclass_fields__)
    settings = {k: v for k, v in c.items() if k in fields}
    if settings.get("use_dynamic_shifting"):
        settings["training_mu"] = math.log(TRAINING_SHIFT)
    else:
        settings["training_shift"] = TRAINING_SHIFT
    return FlowMatchScheduler(FlowMatchConfig(**settings))


class FluxPipeline(BasePipeline):
    """FLUX.1 text-to-image (and img2img) for inference and training.

    Build it with ``load_pipeline("flux-dev", ...)`` (or ``"flux-schnell"``);
    ``pipe(prompt, ...)`` generates; ``pipe.training_inputs(batch)`` feeds the training loss.
    """

    model_names = ("dit", "vae", "text_encoder", "text_encoder_2")
    # set by the loader (None only in a pipeline built without its models)
    dit: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: T5EncoderModel

    def __init__(
        self,
        device: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
        dit: torch.nn.Module | None = None,
        vae: torch.nn.Module | None = None,
        text_encoder: torch.nn.Module | None = None,
        text_encoder_2: torch.nn.Module | None = None,
        tokenizer: Any = None,
        tokenizer_2: Any = None,
        scheduler_config: Mapping[str, Any] | None = None,
        variant: str = DEV.family,
    ) -> None:
        super().__init__(device=device, torch_dtype=torch_dtype)
        self.variant = VARIANTS[variant]
        self.dit, self.vae = dit, vae
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.scheduler = flux_scheduler(scheduler_config, self.variant)
        self.add_units(default_units())

    # -- the denoiser --------------------------------------------------------------------

    def model_fn(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        prompt_emb: torch.Tensor,
        pooled_prompt_emb: torch.Tensor,
        guidance_scale: float = 3.5,
        use_gradient_checkpointing: bool = False,
        use_gradient_checkpointing_offload: bool = False,
        use_gradient_checkpointing_policy: str = "full",
        **inputs: Any,
    ) -> torch.Tensor:
        """Flow prediction ``(B, 16, h, w)`` for latents at ``timestep`` (0-1000 scale).

        ``guidance_scale`` feeds the guidance embedding of FLUX.1 [dev] (ignored by schnell,
        whose transformer has none), as diffusers passes it: a float32 vector.
        """
        batch, _, h, w = latents.shape
        self._set_checkpointing(
            use_gradient_checkpointing, use_gradient_checkpointing_offload,
            use_gradient_checkpointing_policy,
        )
        guidance = None
        if self.dit.config.guidance_embeds:
            guidance = torch.full([batch], float(guidance_scale), device=latents.device)
        out = self.dit(
            hidden_states=pack_latents(latents),
            # core timesteps are 1000 * sigma; the transformer takes sigma (it multiplies by 1000)
            timestep=timestep.expand(batch).to(latents.dtype) / 1000,
            guidance=guidance,
            pooled_projections=pooled_prompt_emb,
            encoder_hidden_states=prompt_emb,
            txt_ids=text_ids(prompt_emb.shape[1], latents.device, latents.dtype),
            img_ids=image_ids(h, w, latents.device, latents.dtype),
            return_dict=False,
        )[0]
        return unpack_latents(out, h, w)

    def _set_checkpointing(self, enabled: bool, offload: bool, policy: str = "full") -> None:
        # switching walks every module: only do it when the training flags change
        state = (bool(enabled), bool(offload), policy)
        changed_outside = getattr(self.dit, "gradient_checkpointing", state[0]) != state[0]
        if changed_outside or getattr(self.dit, "_diffsynth_checkpointing", None) != state:
            set_gradient_checkpointing(self.dit, *state)
            self.dit._diffsynth_checkpointing = state

    # -- VAE -------------------------------------------------------------------------------

    def encode_image(self, image: Any) -> torch.Tensor:
        """PIL image(s) -> normalised latents ``(B, 16, H/8, W/8)`` (the latent mode)."""
        pixels = self.preprocess_image(image).to(self.vae.dtype)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vae.parameters())
        with torch.set_grad_enabled(grad):
            latents = self.vae.encode(pixels).latent_dist.mode()
        return normalize(latents, self.vae).to(self.torch_dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images ``(B, 3, H, W)`` in [-1, 1]."""
        self.load_models_to_device(["vae"])
        z = denormalize(latents.to(self.vae.dtype), self.vae)
        return self.vae.decode(z, return_dict=False)[0]

    # -- training --------------------------------------------------------------------------

    def training_inputs(
        self, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A batch (``image``: PIL or list, ``prompt``: str or list) -> the three input dicts."""
        image = data["image"]
        first = image[0] if isinstance(image, (list, tuple)) else image
        batch = len(image) if isinstance(image, (list, tuple)) else 1
        shared = {
            "input_image": image,
            "height": first.size[1],
            "width": first.size[0],
            "batch_size": batch,
        }
        return shared, {"prompt": data["prompt"]}, {"negative_prompt": ""}

    # -- inference -------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int | None = None,
        cfg_scale: float = 1.0,
        guidance_scale: float = 3.5,
        seed: int | None = None,
        input_image: Any = None,
        denoising_strength: float = 1.0,
        rand_device: str = "cpu",
        progress: bool = True,
        latents: torch.Tensor | None = None,
        max_sequence_length: int | None = None,
        output_type: str = "pil",
        **extra_inputs: Any,
    ) -> Any:
        """Generate. Returns a PIL image (a list for a list of prompts); ``output_type="pt"``
        gives the decoded tensor in [-1, 1], ``"latent"`` the final latent grid.
        ``cfg_scale`` > 1 is diffusers' ``true_cfg_scale`` (a second pass on
        ``negative_prompt``); ``guidance_scale`` is dev's embedded guidance."""
        height, width = self.check_resize_height_width(height, width)
        steps = num_inference_steps or self.variant.num_inference_steps
        seq_len = (height // 16) * (width // 16)
        shared = {
            "height": height, "width": width, "seed": seed, "rand_device": rand_device,
            "input_image": input_image, "denoising_strength": denoising_strength,
            "cfg_scale": cfg_scale, "guidance_scale": guidance_scale, "latents": latents,
            "batch_size": 1 if isinstance(prompt, str) else len(prompt),
            "max_sequence_length": max_sequence_length, **extra_inputs,
        }  # fmt: skip
        with self.inference_schedule(steps, denoising_strength, image_seq_len=seq_len):
            shared, posi, nega = self.run_units(
                shared, {"prompt": prompt}, {"negative_prompt": negative_prompt}
            )
            result = self.denoise(shared, posi, nega, progress=progress)
        return self._output(result, output_type, single=isinstance(prompt, str))

    def _output(self, latents: torch.Tensor, output_type: str, single: bool) -> Any:
        if output_type == "latent":
            return latents
        images = self.decode_latents(latents)
        if output_type == "pt":
            return images
        pil = self.tensor_to_images(images)
        return pil[0] if single else pil

    # -- LoRA ------------------------------------------------------------------------------

    def load_lora(self, path: Any, alpha: float = 1.0, model: str = "dit") -> int:
        """Merge a LoRA file (diffusers, ComfyUI's Flux layout, kohya ...) into ``model``;
        returns the number of layers changed."""
        from ._core import merge_lora, read_lora_file

        target = getattr(self, model)
        return merge_lora(target, read_lora_file(path, target, family=self.family), scale=alpha)
