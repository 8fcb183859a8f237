"""QwenImagePipeline: diffusers' Qwen-Image models driven by diffsynth's units.

The models are the real ones (``QwenImageTransformer2DModel`` as ``dit``,
``AutoencoderKLQwenImage`` as ``vae``, ``Qwen2_5_VLForConditionalGeneration`` as
``text_encoder``); the schedule is the core's :class:`FlowMatchScheduler` with Qwen-Image's
settings. For the same weights, prompt and noise the output equals diffusers'
``QwenImagePipeline`` (tested on the tiny preset). :func:`load_qwen_image_pipeline`, the
family's loader, builds it from the components :mod:`.loading` reads.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from diffsynth_core import (
    BasePipeline,
    FlowMatchConfig,
    FlowMatchScheduler,
    ModelConfig,
    UnknownModelError,
    set_gradient_checkpointing,
)

from .latents import denormalize, img_shapes_for, normalize, pack_latents, unpack_latents
from .loading import FAMILY, configs_by_component, load_component, scheduler_config
from .units import default_units

if TYPE_CHECKING:  # untyped libraries: these names are Any to a type checker
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

DitKwargsFn = Callable[[Any, torch.Tensor, torch.Tensor, dict[str, Any]], Mapping[str, Any]]

TRAINING_MU = 0.8  # DiffSynth-Studio trains Qwen-Image with this fixed shift


def qwen_scheduler(config: Mapping[str, Any] | None = None) -> FlowMatchScheduler:
    """The core scheduler set up from a diffusers ``scheduler_config.json`` (or the official one)."""
    from .tiny import SCHEDULER_CONFIG

    c = {**SCHEDULER_CONFIG, **(config or {})}
    fields = set(FlowMatchConfig.__dataclass_fields__)
    settings = {k: v for k, v in c.items() if k in fields}
    return FlowMatchScheduler(FlowMatchConfig(**settings, training_mu=TRAINING_MU))


class QwenImagePipeline(BasePipeline):
    """Qwen-Image text-to-image (and img2img) for inference and training.

    Build it with :meth:`from_pretrained` (seed style) or ``load_pipeline("qwen-image", ...)``.
    ``pipe(prompt, ...)`` generates; ``pipe.training_inputs(batch)`` feeds the training loss.
    """

    model_names = ("dit", "vae", "text_encoder")
    # set by the loader (None only in a pipeline built without its models)
    dit: QwenImageTransformer2DModel
    vae: AutoencoderKLQwenImage
    text_encoder: Qwen2_5_VLForConditionalGeneration

    def __init__(
        self,
        device: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
        dit: torch.nn.Module | None = None,
        vae: torch.nn.Module | None = None,
        text_encoder: torch.nn.Module | None = None,
        tokenizer: Any = None,
        scheduler_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(device=device, torch_dtype=torch_dtype)
        self.dit = dit
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = qwen_scheduler(scheduler_config)
        self.add_units(default_units())

    @classmethod
    def from_pretrained(
        cls,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device | None = None,
        model_configs: Sequence[ModelConfig] = (),
        tokenizer_config: ModelConfig | None = None,
    ) -> QwenImagePipeline:
        """Load from ModelConfigs as in the seed (``transformer/`` -> dit, ``vae/``, ...)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        configs = configs_by_component(model_configs, tokenizer_config)
        return load_through_hooks(configs, str(device), torch_dtype)

    # -- the denoiser --------------------------------------------------------------------

    def model_fn(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        prompt_emb: torch.Tensor,
        prompt_emb_mask: torch.Tensor | None = None,
        edit_latents: Sequence[torch.Tensor] | None = None,
        dit_extra_kwargs_fns: Sequence[DitKwargsFn] | None = None,
        use_gradient_checkpointing: bool = False,
        use_gradient_checkpointing_offload: bool = False,
        use_gradient_checkpointing_policy: str = "full",
        **inputs: Any,
    ) -> torch.Tensor:
        """Flow prediction ``(B, 16, h, w)`` for latents at ``timestep`` (0-1000 scale).

        ``edit_latents`` (Qwen-Image-Edit) are appended to the image tokens and cut from the
        output. Each of ``dit_extra_kwargs_fns`` is called as ``fn(pipe, tokens, sigma,
        inputs)`` (``inputs``: every model input plus ``img_shapes``) and its dict is merged
        into the DiT's keyword arguments (ControlNet residuals ...); see
        docs/models/qwen-image.md.
        """
        extra = list(edit_latents or [])
        tokens = pack_latents(latents)
        n_target = tokens.shape[1]
        if extra:
            tokens = torch.cat([tokens, *(pack_latents(e) for e in extra)], dim=1)
        batch = latents.shape[0]
        # core timesteps are 1000 * sigma; the DiT takes sigma (it multiplies by 1000 inside)
        sigma = timestep.expand(batch).to(latents.dtype) / 1000
        context = {
            **inputs, "latents": latents, "timestep": timestep, "prompt_emb": prompt_emb,
            "prompt_emb_mask": prompt_emb_mask, "img_shapes": img_shapes_for(latents, extra),
        }  # fmt: skip
        # set before the extra kwargs functions run: a ControlNet follows the DiT's setting
        self._set_checkpointing(
            use_gradient_checkpointing, use_gradient_checkpointing_offload,
            use_gradient_checkpointing_policy,
        )
        kwargs = merge_dit_kwargs(self, tokens, sigma, context, dit_extra_kwargs_fns or ())
        dit_class: type[torch.nn.Module] = type(self.dit)
        # mypy checks a class object's __hash__ as the instance method's; classes hash fine
        if "txt_seq_lens" in _forward_params(dit_class):  # type: ignore[arg-type]  # diffusers < 0.37 needs them
            kwargs.setdefault("txt_seq_lens", _text_lengths(prompt_emb, prompt_emb_mask))
        out = self.dit(
            hidden_states=tokens,
            timestep=sigma,
            encoder_hidden_states=prompt_emb,
            encoder_hidden_states_mask=prompt_emb_mask,
            img_shapes=context["img_shapes"],
            return_dict=False,
            **kwargs,
        )[0]
        return unpack_latents(out[:, :n_target], latents.shape[-2], latents.shape[-1])

    def _set_checkpointing(self, enabled: bool, offload: bool, policy: str = "full") -> None:
        # switching walks every DiT module: only do it when the training flags change
        state = (bool(enabled), bool(offload), policy)
        changed_outside = getattr(self.dit, "gradient_checkpointing", state[0]) != state[0]
        if changed_outside or getattr(self.dit, "_diffsynth_checkpointing", None) != state:
            set_gradient_checkpointing(self.dit, *state)
            self.dit._diffsynth_checkpointing = state

    def cfg_combine(self, posi: torch.Tensor, nega: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """diffusers' true CFG: combine, then rescale each token to the positive one's norm."""
        h, w = posi.shape[-2:]
        p, n = pack_latents(posi), pack_latents(nega)
        combined = n + cfg_scale * (p - n)
        scale = torch.norm(p, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True)
        return unpack_latents(combined * scale, h, w)

    # -- VAE -------------------------------------------------------------------------------

    def encode_image(self, image: Any) -> torch.Tensor:
        """PIL image(s) -> normalised latents ``(B, 16, H/8, W/8)`` (the latent mode)."""
        pixels = self.preprocess_image(image).to(self.vae.dtype)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vae.parameters())
        with torch.set_grad_enabled(grad):
            latents = self.vae.encode(pixels[:, :, None]).latent_dist.mode()
        return normalize(latents, self.vae).to(self.torch_dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images ``(B, 3, H, W)`` in [-1, 1]."""
        self.load_models_to_device(["vae"])
        z = denormalize(latents.to(self.vae.dtype), self.vae)
        return self.vae.decode(z, return_dict=False)[0][:, :, 0]

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
        num_inference_steps: int = 30,
        cfg_scale: float = 4.0,
        seed: int | None = None,
        input_image: Any = None,
        denoising_strength: float = 1.0,
        rand_device: str = "cpu",
        progress: bool = True,
        latents: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        edit_image: Any = None,
        output_type: str = "pil",
        **extra_inputs: Any,
    ) -> Any:
        """Generate. Returns a PIL image (a list for a list of prompts); ``output_type="pt"``
        gives the decoded tensor in [-1, 1], ``"latent"`` the final latents. ``extra_inputs``
        reach the units other plugins add (``control_image`` ...)."""
        height, width = self.check_resize_height_width(height, width)
        seq_len = (height // 16) * (width // 16)
        shared = {
            "height": height, "width": width, "seed": seed, "rand_device": rand_device,
            "input_image": input_image, "denoising_strength": denoising_strength,
            "cfg_scale": cfg_scale, "latents": latents, "batch_size": _count(prompt),
            "max_sequence_length": max_sequence_length, "edit_image": edit_image, **extra_inputs,
        }  # fmt: skip
        with self.inference_schedule(num_inference_steps, denoising_strength, image_seq_len=seq_len):
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
        """Merge a LoRA file (any supported key form) into ``model``; returns layers changed.

        The family's LoRA layout says which prefixes the file may carry (a ControlNet
        family's ``controlnet.``)."""
        from diffsynth_core import merge_lora, read_lora_file

        target = getattr(self, model)
        return merge_lora(target, read_lora_file(path, target, family=self.family), scale=alpha)


@functools.cache
def _forward_params(model_class: type[torch.nn.Module]) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def _text_lengths(prompt_emb: torch.Tensor, mask: torch.Tensor | None) -> list[int]:
    if mask is None:
        return [prompt_emb.shape[1]] * prompt_emb.shape[0]
    return [int(n) for n in mask.sum(dim=1)]


def _count(prompt: str | Sequence[str]) -> int:
    return 1 if isinstance(prompt, str) else len(prompt)


def merge_dit_kwargs(
    pipe: Any,
    tokens: torch.Tensor,
    sigma: torch.Tensor,
    inputs: dict[str, Any],
    fns: Sequence[DitKwargsFn],
) -> dict[str, Any]:
    """Collect the extra DiT kwargs of every function; list-valued results of the same key
    (residuals of several ControlNets) are summed element by element."""
    merged: dict[str, Any] = {}
    for fn in fns:
        for key, value in dict(fn(pipe, tokens, sigma, inputs)).items():
            if key not in merged:
                merged[key] = value
            elif isinstance(value, (list, tuple)) and len(value) == len(merged[key]):
                merged[key] = [a + b for a, b in zip(merged[key], value, strict=True)]
            else:
                raise ValueError(f"two dit_extra_kwargs_fns both set {key!r} and cannot be summed")
    return merged


def load_qwen_image_pipeline(
    model_configs: Mapping[str, ModelConfig], device: str, torch_dtype: Any
) -> Any:
    """Build a :class:`QwenImagePipeline` from component configs (missing ones stay ``None``)."""
    models = {name: load_component(name, cfg, torch_dtype) for name, cfg in model_configs.items()}
    pipe = QwenImagePipeline(
        device=device,
        torch_dtype=torch_dtype,
        scheduler_config=scheduler_config(model_configs.get("dit")),
        **models,
    )
    for name in pipe.model_names:
        model = getattr(pipe, name)
        if model is not None:
            model.eval().to(device)
    return pipe


def load_through_hooks(configs: Mapping[str, ModelConfig], device: str, torch_dtype: Any) -> Any:
    """Load via ``diffsynth_core.pipeline.load_pipeline`` so other plugins' units join in;
    straight from the configs when this plugin is not loaded (DIFFSYNTH_LOAD_PLUGINS)."""
    from diffsynth_core import load_pipeline

    try:
        return load_pipeline(FAMILY, configs, device=device, torch_dtype=torch_dtype)
    except UnknownModelError:
        return load_qwen_image_pipeline(configs, device, torch_dtype)
