"""QwenImageEditPipeline: Qwen-Image-Edit (and -2509 / -2511, "plus") on the Qwen-Image pipeline.

The same models as Qwen-Image plus the Qwen2.5-VL ``processor``; the text-to-image prompt unit
is replaced by the edit one and the edit images' latents join the image tokens (see
:mod:`.edit_units`). Qwen-Image-Edit-2511's zero-timestep conditioning of the reference tokens
is a switch of its DiT's config (``zero_cond_t``), which diffusers' transformer applies from
``img_shapes``: the pipeline is 2509's. For the same weights, inputs and noise the output
equals diffusers' ``QwenImageEditPipeline`` / ``QwenImageEditPlusPipeline`` (tested on the
tiny presets, with and without true CFG).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from diffsynth_core import ConfigError, ModelConfig, ModelFileError, PipelineUnit

from .edit_units import VAE_PIXELS, calculate_dimensions, edit_units, per_sample
from .loading import load_component, scheduler_config
from .pipeline import QwenImagePipeline
from .units import QwenImageUnit_PromptEmbedder, default_units

EDIT = "qwen-image-edit"
EDIT_PLUS = "qwen-image-edit-plus"
MAX_IMAGES = {EDIT: 1, EDIT_PLUS: 3}
EDIT_COLUMNS = ("edit_image", "edit_image_2", "edit_image_3")  # one row's edit images, in order


def edit_pipeline_units() -> list[PipelineUnit]:
    """Qwen-Image's units with the edit ones in place of its prompt embedder."""
    units = [u for u in default_units() if not isinstance(u, QwenImageUnit_PromptEmbedder)]
    return units + edit_units()


class QwenImageEditPipeline(QwenImagePipeline):
    """Instruction editing: ``pipe(prompt, edit_image=image_or_images, ...)``.

    ``edit_plus`` selects the 2509/2511 behaviour (several images, ``Picture N:`` labels,
    384x384 vision inputs); ``max_edit_images`` is the version's limit.
    """

    def __init__(
        self, *args: Any, processor: Any = None, family: str = EDIT, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.processor = processor
        self.edit_family = family
        self.edit_plus = family == EDIT_PLUS
        self.max_edit_images = MAX_IMAGES[family]
        self.units = []
        self.add_units(edit_pipeline_units())

    @classmethod
    def from_pretrained(  # the family and the processor added to the base signature
        cls,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device | None = None,
        model_configs: Sequence[ModelConfig] = (),
        tokenizer_config: ModelConfig | None = None,
        processor_config: ModelConfig | None = None,
        family: str = EDIT_PLUS,
    ) -> QwenImageEditPipeline:
        """Seed style, as :meth:`QwenImagePipeline.from_pretrained`, for ``family``; the
        processor defaults to the ``processor/`` beside the text encoder."""
        from diffsynth_core import load_pipeline

        from .loading import configs_by_component

        configs = configs_by_component(model_configs, tokenizer_config)
        text_encoder = configs.get("text_encoder")
        if processor_config is None and text_encoder is not None and text_encoder.path:
            beside = text_encoder.folder().parent / "processor"
            processor_config = ModelConfig(path=beside) if beside.is_dir() else None
        if processor_config is not None:  # else the official settings and the tokenizer
            configs["processor"] = processor_config
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = load_pipeline(family, configs, device=str(device), torch_dtype=torch_dtype)
        assert isinstance(pipe, QwenImageEditPipeline)
        return pipe

    def training_inputs(
        self, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Qwen-Image's inputs plus each sample's edit images (``edit_image``, then the
        optional ``edit_image_2`` / ``edit_image_3`` columns it fills)."""
        shared, posi, nega = super().training_inputs(data)
        batched = isinstance(data["image"], (list, tuple))
        rows = range(len(data["image"])) if batched else [None]
        samples = []
        for i in rows:
            images = [data[c] if i is None else data[c][i] for c in EDIT_COLUMNS if c in data]
            samples.append([im for im in images if im is not None])
        shared["edit_image"] = samples
        return shared, posi, nega

    @torch.no_grad()
    def __call__(  # type: ignore[override]  # height / width default to the edit image's
        self,
        prompt: str | list[str],
        edit_image: Any = None,
        height: int | None = None,
        width: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Generate from ``edit_image`` (a PIL image; for plus a list of up to three). Without
        a size, the output takes the (last) edit image's aspect at about 1024x1024, as in
        diffusers."""
        samples = per_sample(edit_image)
        if not samples or not samples[0]:
            raise ConfigError(f"{self.edit_family} needs an edit image (--edit-image FILE)")
        ref = samples[0][-1 if self.edit_plus else 0]
        w, h = calculate_dimensions(VAE_PIXELS, ref.size[0] / ref.size[1])
        # diffusers rounds a size down to multiples of 16 here (Qwen-Image rounds up)
        height, width = (height or h) // 16 * 16, (width or w) // 16 * 16
        return super().__call__(prompt, height=height, width=width, edit_image=edit_image, **kwargs)


def load_qwen_image_edit_pipeline(
    family: Any,
    model_configs: Mapping[str, ModelConfig],
    device: str,
    torch_dtype: Any,
    options: Mapping[str, Any] | None = None,
) -> QwenImageEditPipeline:
    """The family's loader: Qwen-Image's components, then the processor (``processor/``; the
    official image settings with ``tokenizer/`` when the copy lacks it)."""
    from .edit_processor import load_processor

    name = getattr(family, "name", family)
    check_edit_images((options or {}).get("edit_image"), name)  # before loading any weight
    models = {
        n: load_component(n, cfg, torch_dtype)
        for n, cfg in model_configs.items()
        if n != "processor"
    }
    processor = load_processor(processor_folder(model_configs), models.get("tokenizer"))
    pipe = QwenImageEditPipeline(
        device=device,
        torch_dtype=torch_dtype,
        scheduler_config=scheduler_config(model_configs.get("dit")),
        processor=processor,
        family=name,
        **models,
    )
    for model_name in pipe.model_names:
        model = getattr(pipe, model_name)
        if model is not None:
            model.eval().to(device)
    return pipe


def processor_folder(model_configs: Mapping[str, ModelConfig]) -> Any:
    """``processor/``, or None for a local copy that lacks it (the official settings and
    ``tokenizer/`` stand in); a hub download that fails still fails."""
    config = model_configs.get("processor")
    if config is None:
        return None
    try:
        return config.folder()
    except ModelFileError:
        if config.path is None:
            raise
        return None


def check_edit_images(edit_image: Any, family: str) -> None:
    """More edit images than the version takes: one line, before the weights load."""
    samples = per_sample(edit_image)
    if samples and len(samples[0]) > MAX_IMAGES[family]:
        from .edit_units import check_count

        check_count(samples, MAX_IMAGES[family], family)
