"""WanVacePipeline: Wan2.1 VACE on diffusers' and transformers' model classes.

Models: ``dit`` (``WanVACETransformer3DModel``), ``vae`` (``AutoencoderKLWan``),
``text_encoder`` (``UMT5EncoderModel``) with ``tokenizer``, and ``vace``: not a fourth model
but a view of the DiT's VACE branch (``vace_blocks`` + ``vace_patch_embedding``), so
``--trainable-models vace`` or ``--lora-base-model vace`` train only that branch while the
weights stay where diffusers' LoRA loader and checkpoints expect them (``transformer.*``).

Training uses the core ``FlowMatchScheduler`` with Wan's shift 5; generation uses diffusers'
UniPC sampler (see ``sampler.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from diffsynth_core import BasePipeline, FlowMatchScheduler, set_gradient_checkpointing

from .conditioning import decode_latents
from .loading import load_components
from .media import Clip, clips_to_tensor, is_clip, numpy_to_frames, save_mp4, video_to_numpy
from .sampler import DEFAULT_SCHEDULER_CONFIG, make_sampler
from .text import encode_prompt
from .units import default_units

TRAINING_SHIFT = 5.0  # Wan's static shift in training: sigma' = 5 s / (1 + 4 s)


class WanVacePipeline(BasePipeline):
    """Wan2.1 VACE text/video-conditioned video generation; the same units train it."""

    model_names = ("dit", "vae", "text_encoder", "vace")

    def __init__(
        self,
        dit: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler_config: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
    ) -> None:
        from diffusers.video_processor import VideoProcessor

        super().__init__(
            device=device,
            torch_dtype=torch_dtype,
            height_division_factor=16,
            width_division_factor=16,
        )
        self.dit, self.vae, self.text_encoder, self.tokenizer = dit, vae, text_encoder, tokenizer
        self.scheduler = FlowMatchScheduler(shift=TRAINING_SHIFT)
        self.scheduler_config = dict(scheduler_config or DEFAULT_SCHEDULER_CONFIG)
        self.video_processor = VideoProcessor(vae_scale_factor=8)
        self.add_units(default_units())

    @classmethod
    def from_model_configs(
        cls,
        model_configs: Mapping[str, Any] | list[Any],
        device: str = "cpu",
        torch_dtype: torch.dtype = torch.float32,
    ) -> WanVacePipeline:
        """Load from ``{component: ModelConfig}`` (or the seed's list of ModelConfigs)."""
        parts = load_components(model_configs, torch_dtype)
        return cls(**parts, device=device, torch_dtype=torch_dtype).to(device)

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | None = None,
        model_id: str | None = None,
        device: str = "cpu",
        torch_dtype: torch.dtype = torch.float32,
        model_configs: Mapping[str, Any] | list[Any] | None = None,
        tokenizer_config: Any = None,
    ) -> WanVacePipeline:
        """A local copy of an official ``*-diffusers`` repository, a hub id, or the seed's
        ``model_configs`` (+ ``tokenizer_config``); through ``load_pipeline``, so units other
        plugins contribute are added."""
        from diffsynth_core import load_pipeline

        from .family import REPO_14B
        from .loading import by_component, repo_model_configs

        configs = (
            by_component(model_configs)
            if model_configs is not None
            else repo_model_configs(model_path, model_id)
        )
        if tokenizer_config is not None:
            configs["tokenizer"] = tokenizer_config
        family = "wan-vace-14b" if model_id == REPO_14B else "wan-vace"
        # the family's loader builds a WanVacePipeline (a diffsynth_load_pipeline hook may not)
        return cast(WanVacePipeline, load_pipeline(family, configs, device=device, torch_dtype=torch_dtype))

    def load_lora(self, path: str, alpha: float = 1.0, model: str = "dit") -> int:
        """Merge a LoRA file (any supported key form) into ``model``; returns modules changed."""
        from diffsynth_core import merge_lora, read_lora_file

        target = getattr(self, model)
        return merge_lora(target, read_lora_file(path, target, family=self.family), alpha)

    @property
    def vace(self) -> torch.nn.ModuleDict:
        """The DiT's VACE branch as one module (a view: it shares the DiT's parameters)."""
        return torch.nn.ModuleDict(
            {
                "vace_blocks": self.dit.vace_blocks,
                "vace_patch_embedding": self.dit.vace_patch_embedding,
            }
        )

    # -- helpers the units call ------------------------------------------------------------

    def encode_prompt(self, prompts: str | list[str]) -> torch.Tensor:
        return encode_prompt(
            self.text_encoder, self.tokenizer, prompts, self.device, self.torch_dtype
        )

    def clips_to_tensor(
        self, clips: list[Any], height: int, width: int, fill: float, frames: int
    ) -> torch.Tensor:
        return clips_to_tensor(
            self.video_processor, clips, height, width, fill, frames, self.device
        )

    def preprocess_reference(self, image: Any) -> torch.Tensor:
        """A reference image at its own size (rounded down to 8 px) as (3, h, w) in [-1, 1]."""
        return self.video_processor.preprocess(image, None, None)[0].to(self.device, torch.float32)

    def vace_scales(self, vace_scale: float | list[float] | torch.Tensor | None) -> torch.Tensor:
        """One conditioning scale per VACE layer, as the DiT wants them."""
        layers = len(self.dit.config.vace_layers)
        value = 1.0 if vace_scale is None else vace_scale
        scales = torch.as_tensor(
            [float(value)] * layers if isinstance(value, (int, float)) else value
        )
        if scales.numel() != layers:
            raise ValueError(
                f"vace_scale needs one value or {layers} (one per VACE layer), got {scales.numel()}"
            )
        return scales.to(device=self.device, dtype=self.dit.dtype)

    # -- the denoiser ---------------------------------------------------------------------

    def model_fn(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        vace_context: torch.Tensor,
        vace_scale: float | list[float] | torch.Tensor | None = 1.0,
        use_gradient_checkpointing: bool = False,
        use_gradient_checkpointing_offload: bool = False,
        use_gradient_checkpointing_policy: str = "full",
        **_: Any,
    ) -> torch.Tensor:
        """The flow (noise - x0) for ``latents`` at ``timestep`` (sigma * 1000)."""
        set_gradient_checkpointing(
            self.dit, use_gradient_checkpointing, use_gradient_checkpointing_offload,
            use_gradient_checkpointing_policy,
        )
        timestep = timestep.reshape(-1).to(self.device)
        if timestep.numel() == 1:
            timestep = timestep.expand(latents.shape[0])
        return self.dit(
            hidden_states=latents.to(self.dit.dtype),
            timestep=timestep,
            encoder_hidden_states=context,
            control_hidden_states=vace_context,
            control_hidden_states_scale=self.vace_scales(vace_scale),
            return_dict=False,
        )[0]

    def denoise(
        self,
        inputs_shared: dict[str, Any],
        inputs_posi: dict[str, Any],
        inputs_nega: dict[str, Any],
        progress: bool = True,
    ) -> torch.Tensor:
        """diffusers' UniPC loop; latents stay float32 between steps."""
        from tqdm.auto import tqdm

        sampler = make_sampler(self.scheduler_config, inputs_shared.get("flow_shift"))
        sampler.set_timesteps(inputs_shared["num_inference_steps"], device=self.device)
        cfg_scale = inputs_shared.get("cfg_scale", 1.0)
        latents = inputs_shared["latents"]
        for t in tqdm(sampler.timesteps, disable=not progress, desc="denoise"):
            shared = {**inputs_shared, "latents": latents}
            pred = self.model_fn(**shared, **inputs_posi, timestep=t)
            if cfg_scale != 1.0:
                pred_nega = self.model_fn(**shared, **inputs_nega, timestep=t)
                pred = self.cfg_combine(pred, pred_nega, cfg_scale)
            latents = sampler.step(pred, t, latents, return_dict=False)[0]
        return latents

    # -- generation -----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str = "",
        vace_video: Clip | None = None,
        vace_video_mask: Clip | None = None,
        vace_reference_image: Any = None,
        num_frames: int = 81,
        height: int = 480,
        width: int = 832,
        num_inference_steps: int = 50,
        cfg_scale: float = 5.0,
        seed: int | None = None,
        vace_scale: float | list[float] = 1.0,
        rand_device: str = "cpu",
        progress: bool = True,
        flow_shift: float | None = None,
        output_type: str = "pil",
    ) -> Any:
        """Generate one clip: PIL frames (``output_type`` "np": (T, H, W, 3) floats in [0, 1],
        as diffusers' default; "latent": the final latents, reference frames included)."""
        shared: dict[str, Any] = {
            "vace_video": vace_video,
            "vace_video_mask": vace_video_mask,
            "vace_reference_image": vace_reference_image,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "num_inference_steps": num_inference_steps,
            "cfg_scale": cfg_scale,
            "seed": seed,
            "vace_scale": vace_scale,
            "rand_device": rand_device,
            "flow_shift": flow_shift,
            "batch_size": 1,
        }
        shared, posi, nega = self.run_units(
            shared, {"prompt": prompt}, {"negative_prompt": negative_prompt}
        )
        latents = self.denoise(shared, posi, nega, progress=progress)
        if output_type == "latent":
            return latents
        references = (
            0 if shared["reference_pixels"] is None else shared["reference_pixels"].shape[1]
        )
        video = video_to_numpy(self.decode_video(latents[:, :, references:]))[0]
        return video if output_type == "np" else numpy_to_frames(video)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> pixels (B, 3, T, H, W) in about [-1, 1]."""
        self.load_models_to_device(["vae"])
        return decode_latents(self.vae, latents)

    @staticmethod
    def save_video(frames: list[Any], path: str, fps: float = 16) -> Any:
        """Write generated frames as an mp4 (16 fps, Wan's frame rate)."""
        return save_mp4(frames, path, fps)

    # -- training -------------------------------------------------------------------------

    def training_inputs(
        self, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A batch (one sample's fields, or one list per field) -> the units' inputs."""
        clips = [data["video"]] if is_clip(data["video"]) else list(data["video"])
        batch = len(clips)
        first = clips[0][0]
        shared = {
            "input_video": clips,
            "height": first.height,
            "width": first.width,
            "num_frames": min(len(c) for c in clips),
            "batch_size": batch,
            "vace_scale": 1.0,
            "vace_video": data.get("vace_video"),
            "vace_video_mask": data.get("vace_video_mask"),
            "vace_reference_image": _references(data.get("vace_reference_image"), batch),
            "seed": None,
            "rand_device": self.device,
        }
        return shared, {"prompt": data["prompt"]}, {"negative_prompt": ""}


def _references(value: Any, batch: int) -> Any:
    """A batch's reference cells (one per sample: image, frames, or None) -> one list per clip."""
    if value is None or batch == 1:
        return value
    return [
        [] if v is None else ([v] if not isinstance(v, (list, tuple)) else list(v)) for v in value
    ]
