"""Our edit pipelines against diffusers' QwenImageEditPipeline / QwenImageEditPlusPipeline on
the same tiny weights (fp32, CPU), with and without true CFG.

diffusers resizes the edit images to about 1024x1024 for the VAE (and the plus pipeline to
384x384 for the vision tower). Most cases run at smaller areas to stay fast: diffusers' sizes
are patched in its modules and ours given as the ``edit_image_pixels`` / ``edit_vl_pixels``
options (the real sizes are checked to be diffusers' constants).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from diffsynth_qwen_image.edit_tiny import load_edit_pipeline as load_edit

TOL = 1e-5
PROMPT = "make the square green"
SMALL = {"edit_image_pixels": 128 * 128, "edit_vl_pixels": 64 * 64}


@pytest.fixture()
def small_diffusers_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' edit sizes set to SMALL's (module constants / the size function's area)."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", SMALL["edit_image_pixels"])
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", SMALL["edit_vl_pixels"])
    real = edit.calculate_dimensions
    monkeypatch.setattr(
        edit, "calculate_dimensions", lambda area, ratio: real(SMALL["edit_image_pixels"], ratio)
    )


def _diffusers(folder: Path, plus: bool, processor: Any) -> Any:
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    # the processor object: Qwen2VLProcessor.from_pretrained needs torchvision here
    pipe = cls.from_pretrained(str(folder), processor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _compare(
    folder: Path, plus: bool, images: Any, cfg: float, sizes: dict[str, int], **size: int
) -> float:
    ours_pipe = load_edit(folder, plus)
    negative = "blurry" if cfg > 1 else None
    ours = ours_pipe(
        PROMPT, edit_image=images, negative_prompt=negative or "", cfg_scale=cfg, seed=3,
        progress=False, output_type="pt", **sizes, **size,
    )  # fmt: skip
    theirs = _diffusers(folder, plus, ours_pipe.processor)(
        image=images, prompt=PROMPT, negative_prompt=negative, true_cfg_scale=cfg,
        generator=torch.Generator().manual_seed(3), output_type="pt", **size,
    ).images * 2 - 1  # fmt: skip
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    print(f"parity {folder.parent.name} cfg={cfg}: max abs diff {diff:.2e}")
    return diff


@pytest.mark.usefixtures("small_diffusers_sizes")
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_edit_matches_diffusers(edit_dir: Path, edit_images: list[Image.Image], cfg: float) -> None:
    size = dict(height=64, width=80, num_inference_steps=2)
    assert _compare(edit_dir, False, edit_images[0], cfg, SMALL, **size) < TOL


@pytest.mark.usefixtures("small_diffusers_sizes")
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_edit_plus_2511_matches_diffusers(
    edit_plus_dir: Path, edit_images: list[Image.Image], cfg: float
) -> None:
    size = dict(height=64, width=64, num_inference_steps=2)
    assert _compare(edit_plus_dir, True, edit_images, cfg, SMALL, **size) < TOL


@pytest.mark.usefixtures("small_diffusers_sizes")
def test_edit_plus_2509_matches_diffusers(
    edit_2509_dir: Path, edit_images: list[Image.Image]
) -> None:
    size = dict(height=64, width=64, num_inference_steps=2)
    assert _compare(edit_2509_dir, True, edit_images[:2], 4.0, SMALL, **size) < TOL


def test_default_sizes_are_diffusers() -> None:
    """The real sizes are diffusers' (a run at them takes a minute on a CPU: the parity cases
    above run the same code at smaller areas; the closing note of issue 14 has a real-size
    figure)."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus

    from diffsynth_qwen_image.edit_units import VAE_PIXELS, VL_PIXELS, calculate_dimensions

    assert (VAE_PIXELS, VL_PIXELS) == (plus.VAE_IMAGE_SIZE, plus.CONDITION_IMAGE_SIZE)
    for area in (VAE_PIXELS, VL_PIXELS, 4096, 128 * 128):
        for ratio in (1.0, 1.25, 0.5, 16 / 9, 0.7):
            assert calculate_dimensions(area, ratio) == plus.calculate_dimensions(area, ratio)
            assert calculate_dimensions(area, ratio) == edit.calculate_dimensions(area, ratio)[:2]


def test_zero_cond_t_and_the_images_change_the_result(
    edit_plus_dir: Path, edit_2509_dir: Path, edit_images: list[Image.Image]
) -> None:
    """The comparisons have teeth: 2511's switch, the second image and its order matter."""
    gen = dict(height=64, width=64, num_inference_steps=2, seed=0, progress=False)
    run = dict(output_type="latent", cfg_scale=1.0, **SMALL, **gen)
    p2511, p2509 = load_edit(edit_plus_dir, True), load_edit(edit_2509_dir, True)
    a = p2511(PROMPT, edit_image=edit_images[:2], **run)
    assert (a - p2509(PROMPT, edit_image=edit_images[:2], **run)).abs().max() > 1e-3
    assert (a - p2511(PROMPT, edit_image=edit_images[:1], **run)).abs().max() > 1e-3
    assert (a - p2511(PROMPT, edit_image=edit_images[1::-1], **run)).abs().max() > 1e-3


def test_edit_template_prefix_is_the_64_tokens_diffusers_drops(edit_dir: Path) -> None:
    from diffsynth_qwen_image.edit_units import EDIT_TEMPLATE, EDIT_TEMPLATE_DROP

    pipe = load_edit(edit_dir, plus=False)
    prefix = EDIT_TEMPLATE.split("{}")[0]
    assert len(pipe.tokenizer(prefix)["input_ids"]) == EDIT_TEMPLATE_DROP == 64


def test_processor_loads_without_torchvision_and_without_its_folder(
    edit_dir: Path, edit_images: list[Image.Image]
) -> None:
    """The image-only processor from processor/, and from the official settings plus the
    tokenizer where a copy lacks processor/: the same tokens and pixels."""
    from transformers import Qwen2Tokenizer

    from diffsynth_qwen_image.edit_processor import load_processor

    from_folder = load_processor(edit_dir / "processor")
    fallback = load_processor(None, Qwen2Tokenizer.from_pretrained(str(edit_dir / "tokenizer")))
    text = ["Picture 1: <|vision_start|><|image_pad|><|vision_end|>make it red"]
    a = from_folder(text=text, images=edit_images[:1], padding=True, return_tensors="pt")
    b = fallback(text=text, images=edit_images[:1], padding=True, return_tensors="pt")
    for key in ("input_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(a[key], b[key])
    # one token per 2x2 merged patch replaces the image pad
    image_tokens = int((a["input_ids"] == from_folder.image_token_id).sum())
    assert image_tokens == int(a["image_grid_thw"].prod()) // 4 > 1
