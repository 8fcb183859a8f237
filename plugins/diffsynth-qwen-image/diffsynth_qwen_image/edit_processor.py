"""The Qwen2.5-VL processor of the Qwen-Image-Edit families (``processor/`` of the repository).

The official layout names ``transformers.Qwen2VLProcessor``: it turns each
``<|image_pad|>`` of the prompt into one token per 2x2 merged vision patch and gives the
vision tower ``pixel_values`` and ``image_grid_thw``. In transformers 5 that class cannot be
built without its video processor, which needs torchvision (and the registry's torchvision
wheels for CPU torch do not import). Editing needs no video, so :func:`load_processor` takes the
real class when it loads, else :class:`ImageOnlyQwen2VLProcessor`: the same class with the video
processor left out, built from the folder's image processor and tokenizer. Both run
transformers' own ``__call__``, so the tokens and pixels are the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from diffsynth_core import ModelFileError

logger = logging.getLogger(__name__)

# preprocessor_config.json of Qwen/Qwen-Image-Edit(-2509/-2511): Qwen2.5-VL's image processor
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "merge_size": 2,
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "temporal_patch_size": 2,
    "processor_class": "Qwen2VLProcessor",
}


def image_only_processor_class() -> type:
    """``Qwen2VLProcessor`` without its video processor (built lazily: transformers is heavy)."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor for images only: no video processor, hence no torchvision."""

        def __init__(self, image_processor: Any, tokenizer: Any, chat_template: Any = None):
            # the attributes Qwen2VLProcessor.__init__ sets, then the mixin with two parts
            self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
            self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2VLProcessor


def image_only_processor(image_processor: Any, tokenizer: Any) -> Any:
    """An image-only Qwen2-VL processor from its two parts."""
    return image_only_processor_class()(image_processor, tokenizer)


def default_image_processor() -> Any:
    """Qwen2.5-VL's image processor with the official settings (PIL backend: no torchvision)."""
    from transformers import Qwen2VLImageProcessorPil

    settings = {k: v for k, v in PREPROCESSOR_CONFIG.items() if k != "processor_class"}
    settings["size"] = {
        "shortest_edge": settings.pop("min_pixels"),
        "longest_edge": settings.pop("max_pixels"),
    }
    settings.pop("image_processor_type")
    return Qwen2VLImageProcessorPil(**settings)


def load_processor(folder: Path | None, tokenizer: Any = None) -> Any:
    """The processor of a ``processor/`` folder: the real class if it loads here, else the
    image-only one from the folder's image processor and tokenizer. Without a folder (a copy of
    the repository that lacks it) the official image settings and ``tokenizer`` are used."""
    if folder is None:
        if tokenizer is None:
            raise ModelFileError("the Qwen-Image-Edit processor needs processor/ or a tokenizer")
        return image_only_processor(default_image_processor(), tokenizer)
    from transformers import Qwen2Tokenizer, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    try:
        return Qwen2VLProcessor.from_pretrained(str(folder))
    except Exception as error:  # noqa: BLE001 - transformers raises many kinds here
        # typically: no torchvision for the video processor; images need none of it
        logger.debug("Qwen2VLProcessor did not load (%s); using the image-only one", error)
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelFileError(f"{folder} has no preprocessor_config.json (the Qwen2.5-VL processor)")
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(folder))
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    text = Qwen2Tokenizer.from_pretrained(str(folder)) if has_tokenizer else tokenizer
    if text is None:
        raise ModelFileError(f"{folder} has no tokenizer files and no tokenizer/ was loaded")
    return image_only_processor(image_processor, text)


def save_processor(processor: Any, folder: Path) -> None:
    """Write ``processor/`` as the official repository holds it (image processor + tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    processor.image_processor.save_pretrained(str(folder))
    processor.tokenizer.save_pretrained(str(folder))
