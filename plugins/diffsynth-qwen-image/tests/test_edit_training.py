"""Training the edit families: the rows' edit images reach the units, full fine-tuning trains
the DiT through the reference tokens, and the edit units declare what a feature cache needs."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from diffsynth_core.training.cache import FeatureCache
from diffsynth_core.training.losses import FlowMatchSFTLoss
from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
from diffsynth_qwen_image.edit_tiny import load_edit_pipeline as load_edit
from diffsynth_qwen_image.edit_units import (
    QwenImageEditUnit_EditImageEmbedder,
    QwenImageEditUnit_PromptEmbedder,
)

SMALL = {"edit_image_pixels": 64 * 64, "edit_vl_pixels": 64 * 64}


def test_training_inputs_gather_each_rows_edit_columns(
    edit_plus_dir: Path, edit_images: list[Image.Image]
) -> None:
    pipe = load_edit(edit_plus_dir, plus=True)
    a, b, c = edit_images
    one = {"image": a, "prompt": "x", "edit_image": b, "edit_image_2": c}
    assert pipe.training_inputs(one)[0]["edit_image"] == [[b, c]]
    batch = {"image": [a, a], "prompt": ["x", "y"], "edit_image": [b, c], "edit_image_2": [c, b]}
    assert pipe.training_inputs(batch)[0]["edit_image"] == [[b, c], [c, b]]


def _loss(module: PipelineTrainingModule, data: dict) -> torch.Tensor:
    torch.manual_seed(0)  # the same noise and timestep for every call
    return module(data)


def test_full_training_trains_the_dit_through_the_edit_image(
    edit_dir: Path, edit_images: list[Image.Image]
) -> None:
    pipe = load_edit(edit_dir, plus=False)
    switch_pipe_to_training_mode(pipe, trainable_models="dit")
    module = PipelineTrainingModule(pipe, FlowMatchSFTLoss, SMALL)
    target, before, other = edit_images[1], edit_images[0], edit_images[2]
    data = {"image": target, "prompt": "make the square green", "edit_image": before}
    loss = _loss(module, data)
    assert torch.isfinite(loss)
    assert loss.item() != _loss(module, {**data, "edit_image": other}).item()  # it is used
    loss.backward()
    grads = {n: p.grad for n, p in pipe.dit.named_parameters() if p.requires_grad}
    # (the last block's text stream feeds nothing: those weights get no gradient, as in diffusers)
    for name in ("img_in.weight", "transformer_blocks.0.attn.to_q.weight", "proj_out.weight"):
        assert grads[name] is not None and grads[name].abs().max() > 0
    assert all(not p.requires_grad for p in pipe.text_encoder.parameters())  # frozen encoder
    optimizer = torch.optim.SGD(module.trainable_modules(), lr=1e-2)
    weight = pipe.dit.img_in.weight.detach().clone()
    optimizer.step()
    assert (pipe.dit.img_in.weight - weight).abs().max() > 0


def test_edit_units_are_cacheable_and_declare_every_input(
    edit_plus_dir: Path, edit_images: list[Image.Image]
) -> None:
    """The feature cache keys a unit by its declared inputs: a cached run gives the same
    loss, and changing an input the units read (the edit size) is a miss, not a stale hit."""
    from diffsynth_core.plugins import get_plugin_manager

    units = {type(u): u for u in load_edit(edit_plus_dir, plus=True).units}
    for cls in (QwenImageEditUnit_EditImageEmbedder, QwenImageEditUnit_PromptEmbedder):
        assert units[cls].cacheable
    assert {"edit_image", "edit_image_pixels", "edit_vl_pixels"} <= set(
        units[QwenImageEditUnit_PromptEmbedder].input_params
    )
    pipe = load_edit(edit_plus_dir, plus=True)
    switch_pipe_to_training_mode(pipe, trainable_models="dit")
    data = {"image": edit_images[1], "prompt": "p", "edit_image": edit_images[0]}
    plain = _loss(PipelineTrainingModule(pipe, FlowMatchSFTLoss, SMALL), data).item()
    cache = FeatureCache()
    with cache.installed(get_plugin_manager()):
        module = PipelineTrainingModule(pipe, FlowMatchSFTLoss, SMALL)
        first, again = _loss(module, data).item(), _loss(module, data).item()
        hits = cache.hits
        bigger = PipelineTrainingModule(pipe, FlowMatchSFTLoss, {**SMALL, "edit_vl_pixels": 9216})
        changed = _loss(bigger, data).item()
    assert first == again == plain and hits >= 2
    assert changed != plain


def test_seed_style_from_pretrained_loads_the_edit_family(edit_dir: Path) -> None:
    from diffsynth_core import ModelConfig
    from diffsynth_qwen_image.edit_pipeline import QwenImageEditPipeline

    configs = [
        ModelConfig(path=str(edit_dir), origin_file_pattern=pattern)
        for pattern in (
            "transformer/diffusion_pytorch_model*.safetensors",
            "text_encoder/model*.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        )
    ]
    pipe = QwenImageEditPipeline.from_pretrained(
        torch.float32, "cpu", configs, family="qwen-image-edit"
    )
    assert isinstance(pipe, QwenImageEditPipeline) and pipe.family is not None
    assert (pipe.family.name, pipe.max_edit_images) == ("qwen-image-edit", 1)
    assert pipe.processor.image_processor.merge_size == 2


def test_a_local_copy_without_processor_folder_loads(edit_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "no-processor"
    shutil.copytree(edit_dir, copy, ignore=shutil.ignore_patterns("processor"))
    pipe = load_edit(copy, plus=False)
    assert pipe.processor.tokenizer is pipe.tokenizer  # the official settings + tokenizer/


def test_a_batch_takes_the_first_rows_edit_size_and_each_rows_vision_tokens(
    edit_plus_dir: Path, edit_images: list[Image.Image]
) -> None:
    """Bucketed batches: the reference latents of a batch share the first row's size (one
    tensor); each row's vision input keeps its own image's size; the loss is finite."""
    from diffsynth_qwen_image.edit_units import calculate_dimensions

    pipe = load_edit(edit_plus_dir, plus=True)
    sizes = {**SMALL, "edit_image_pixels": 128 * 128}  # the tall image: 96x160, not square
    tall, square = edit_images[2], edit_images[1]
    batch = {"image": [square, square], "prompt": ["a", "b"], "edit_image": [tall, square]}
    shared, posi, nega = pipe.training_inputs(batch)
    shared = {"cfg_scale": 1, "rand_device": "cpu", **shared, **sizes}
    shared, posi, _ = pipe.run_units(shared, posi, nega)
    (latents,) = shared["edit_latents"]
    w, h = calculate_dimensions(sizes["edit_image_pixels"], tall.size[0] / tall.size[1])
    assert tuple(latents.shape) == (2, 16, h // 8, w // 8) and (w, h) == (96, 160)
    alone = pipe.units[-1].process(pipe, "b", 1, None, square, **sizes)["prompt_emb"]
    assert posi["prompt_emb"].shape[0] == 2
    assert (posi["prompt_emb"][1, : alone.shape[1]] - alone[0]).abs().max() < 1e-5
    module = PipelineTrainingModule(pipe, FlowMatchSFTLoss, sizes)
    assert torch.isfinite(_loss(module, batch))


def test_units_without_an_edit_image_say_so(edit_dir: Path) -> None:
    import pytest

    from diffsynth_core.errors import ConfigError

    pipe = load_edit(edit_dir, plus=False)
    for unit in pipe.units[-2:]:
        inputs = {"prompt": "p"} if isinstance(unit, QwenImageEditUnit_PromptEmbedder) else {}
        with pytest.raises(ConfigError, match="needs an edit image"):
            unit.process(pipe, **inputs)
    with pytest.raises(ConfigError, match="needs an edit image"):
        pipe("make it red", height=32, width=32, num_inference_steps=1, progress=False)
