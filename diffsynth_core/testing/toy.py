"""The ``toy`` model family: a complete plugin small enough for unit tests.

It follows the same rules as a real family: ``build_tiny`` writes the weights in a repository
layout (``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``), ``load_pipeline``
reads them back through :class:`~diffsynth_core.loading.ModelConfig`, training and inference
share the units, and ``__call__`` returns a PIL image.

    from diffsynth_core.plugins import PluginManager, reset_plugin_manager
    from diffsynth_core.testing import ToyPlugin
    reset_plugin_manager(PluginManager.with_plugins(ToyPlugin()))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..pipeline import BasePipeline, Inputs, PipelineUnit
from ..plugins import hookimpl
from ..registry import ComponentFiles, FamilyOption, ModelFamily, TrainingDefaults
from ..scheduler import FlowMatchScheduler
from .toy_models import ToyDiT, ToyTextEncoder, ToyTokenizer, ToyVAE, load_component, save_component

TOY_REPO = "diffsynth/toy"


class ToyUnit_ShapeChecker(PipelineUnit):  # noqa: N801 - DiffSynth's unit naming
    """Round the requested size up to the model's multiples."""

    def __init__(self) -> None:
        super().__init__(input_params=("height", "width"), output_params=("height", "width"))

    def process(self, pipe: BasePipeline, height: int, width: int) -> dict[str, Any]:
        height, width = pipe.check_resize_height_width(height, width)
        return {"height": height, "width": width}


class ToyUnit_NoiseInitializer(PipelineUnit):  # noqa: N801
    """Starting noise, one per sample; the training loss noises ``input_latents`` with it."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("height", "width", "seed", "rand_device", "batch_size"),
            output_params=("noise", "latents"),
        )

    def process(
        self,
        pipe: BasePipeline,
        height: int,
        width: int,
        seed: int | None,
        rand_device: Any,
        batch_size: int | None,
    ) -> dict[str, Any]:
        f = ToyVAE.factor
        shape = (batch_size or 1, 4, height // f, width // f)
        noise = pipe.generate_noise(shape, seed=seed, rand_device=rand_device or "cpu")
        return {"noise": noise, "latents": noise}


class ToyUnit_InputImageEmbedder(PipelineUnit):  # noqa: N801
    """Encode the training (or init) image into ``input_latents``."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("input_image",),
            output_params=("input_latents",),
            onload_model_names=("vae",),
            cacheable=True,
        )

    def process(self, pipe: Any, input_image: Any) -> dict[str, Any]:
        if input_image is None:
            return {}
        return {"input_latents": pipe.vae.encode(pipe.preprocess_image(input_image))}


class ToyUnit_PromptEmbedder(PipelineUnit):  # noqa: N801
    """Prompt (or list of prompts) -> ``text_emb`` (B, dim), once per CFG branch."""

    def __init__(self) -> None:
        super().__init__(
            separate_cfg=True,
            input_params=("caption_prefix",),
            input_params_posi={"prompt": "prompt"},
            input_params_nega={"prompt": "negative_prompt"},
            output_params=("text_emb",),
            onload_model_names=("text_encoder",),
            cacheable=True,
        )

    def process(
        self, pipe: Any, prompt: str | list[str] | None, caption_prefix: str | None = None
    ) -> dict[str, Any]:
        prompts = prompt if isinstance(prompt, list) else [prompt or ""]
        prompts = [f"{caption_prefix} {p}" if caption_prefix else p for p in prompts]
        ids = [pipe.tokenizer(p) for p in prompts]
        return {"text_emb": pipe.text_encoder(ids).to(pipe.torch_dtype)}


class ToyPipeline(BasePipeline):
    """Text-to-image on a 4x-downsampled latent grid; see the module docstring."""

    model_names = ("dit", "vae", "text_encoder")
    # set by the loader (load_toy_pipeline)
    dit: ToyDiT
    vae: ToyVAE
    text_encoder: ToyTextEncoder

    def __init__(
        self, device: str | torch.device = "cpu", torch_dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__(device, torch_dtype, 16, 16)
        self.scheduler = FlowMatchScheduler(shift=3.0)
        self.tokenizer = ToyTokenizer()
        self.units = [
            ToyUnit_ShapeChecker(),
            ToyUnit_NoiseInitializer(),
            ToyUnit_InputImageEmbedder(),
            ToyUnit_PromptEmbedder(),
        ]

    def model_fn(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_emb: torch.Tensor,
        use_gradient_checkpointing: bool = False,
        use_gradient_checkpointing_offload: bool = False,
        **_: Any,
    ) -> torch.Tensor:
        return self.dit(
            latents,
            timestep,
            text_emb,
            use_gradient_checkpointing,
            use_gradient_checkpointing_offload,
        )

    def training_inputs(self, data: Mapping[str, Any]) -> tuple[Inputs, Inputs, Inputs]:
        """One sample (``image`` is a PIL image) or a batch (``image`` is a list of them)."""
        images = data["image"]
        first = images[0] if isinstance(images, list) else images
        shared = {
            "input_image": images,
            "height": first.size[1],
            "width": first.size[0],
            "batch_size": len(images) if isinstance(images, list) else 1,
        }
        return shared, {"prompt": data["prompt"]}, {"negative_prompt": ""}

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str = "",
        height: int = 64,
        width: int = 64,
        seed: int | None = None,
        num_inference_steps: int = 8,
        cfg_scale: float = 1.0,
        init_image: Any = None,
        denoising_strength: float = 1.0,
        progress: bool = False,
        **_: Any,
    ) -> Any:
        height, width = self.check_resize_height_width(height, width)
        self.scheduler.set_timesteps(
            num_inference_steps, denoising_strength if init_image is not None else 1.0
        )
        image = (
            init_image.convert("RGB").resize((width, height)) if init_image is not None else None
        )
        shared = {
            "height": height,
            "width": width,
            "seed": seed,
            "rand_device": "cpu",
            "cfg_scale": cfg_scale,
            "batch_size": 1,
            "input_image": image,
        }
        shared, posi, nega = self.run_units(
            shared, {"prompt": prompt}, {"negative_prompt": negative_prompt}
        )
        if image is not None:
            t0 = self.scheduler.timesteps[:1]
            shared["latents"] = self.scheduler.add_noise(
                shared["input_latents"], shared["noise"], t0
            )
        latents = self.denoise(shared, posi, nega, progress=progress)
        return self.tensor_to_images(self.vae.decode(latents))[0]


def build_tiny(folder: Path) -> None:
    """Write the toy weights (seeded, so every build is identical) in the repository layout."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dit, vae, text_encoder = ToyDiT(), ToyVAE(), ToyTextEncoder()
        vae.tie_decoder()
    save_component(dit, folder / "transformer", "diffusion_pytorch_model.safetensors")
    save_component(vae, folder / "vae", "diffusion_pytorch_model.safetensors")
    save_component(text_encoder, folder / "text_encoder", "model.safetensors")
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"vocab_size": 256}))


def load_toy_pipeline(
    model_configs: Mapping[str, Any], device: str | torch.device, torch_dtype: torch.dtype
) -> ToyPipeline:
    """The pipeline from component configs (``dit``, ``vae``, ``text_encoder``, ``tokenizer``)."""
    pipe = ToyPipeline(device, torch_dtype)
    classes = {"dit": ToyDiT, "vae": ToyVAE, "text_encoder": ToyTextEncoder}
    for name, cls in classes.items():  # a component left out stays None (train --cache)
        if name in model_configs:
            setattr(pipe, name, load_component(cls, model_configs[name].resolve(), torch_dtype, device))
    if "tokenizer" in model_configs:
        config = next(
            f for f in model_configs["tokenizer"].resolve() if f.name == "tokenizer_config.json"
        )
        pipe.tokenizer = ToyTokenizer(json.loads(config.read_text())["vocab_size"])
    return pipe


TOY_FAMILY = ModelFamily(
    name="toy",
    description="a tiny test family: 2-block transformer denoiser, linear VAE, hashed-word encoder",
    model_files={
        "dit": ComponentFiles(TOY_REPO, "transformer/diffusion_pytorch_model*.safetensors"),
        "vae": ComponentFiles(TOY_REPO, "vae/diffusion_pytorch_model*.safetensors"),
        "text_encoder": ComponentFiles(TOY_REPO, "text_encoder/model*.safetensors"),
        "tokenizer": ComponentFiles(TOY_REPO, "tokenizer/"),
    },
    defaults=TrainingDefaults(
        lora_base_model="dit",
        lora_target_modules="to_q,to_k,to_v,to_out",
        lora_rank=4,
        learning_rate=1e-3,
        max_pixels=64 * 64,
        sample_height=64,
        sample_width=64,
    ),
    build_tiny=build_tiny,
    loader=load_toy_pipeline,  # the family carries its loader: no hook tests the family name
    blocks={"dit": ("transformer_blocks",)},  # what FSDP wraps and block swap moves
    options=(
        FamilyOption(
            "caption_prefix", "str", None, "text put in front of every training caption", "train"
        ),
        FamilyOption(
            "init_image", "image", None, "start from this image (image-to-image)", "generate"
        ),
        FamilyOption(
            "denoising_strength",
            "float",
            None,
            "how far to move away from --init-image (0-1)",
            "generate",
        ),
    ),
)


class ToyPlugin:
    """The toy family as a plugin object: register it with ``PluginManager.with_plugins``."""

    __name__ = "toy"

    @hookimpl
    def diffsynth_register_models(self, register: Any) -> None:
        register(TOY_FAMILY)

