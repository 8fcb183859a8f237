"""Training through the shared units: the loss falls when overfitting, checkpointing is exact,
batches work, and img2img starts where the schedule says."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from PIL import Image

from diffsynth_core.training.losses import FlowMatchSFTLoss
from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
from diffsynth_qwen_image.family import LORA_TARGETS
from diffsynth_qwen_image.pipeline import QwenImagePipeline

PipeFactory = Callable[[], QwenImagePipeline]

CAPTION = "a red circle in the center, a blue background"
EVAL_TIMESTEPS = (100, 300, 500, 700, 900)


def _lora_pipe(fresh_pipe: PipeFactory, rank: int = 4) -> QwenImagePipeline:
    pipe = fresh_pipe()
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=rank
    )
    return pipe


def _prepared(pipe: QwenImagePipeline, data: dict) -> dict:
    shared, posi, nega = pipe.training_inputs(data)
    shared = {"cfg_scale": 1, "rand_device": "cpu", **shared}
    shared, posi, _ = pipe.run_units(shared, posi, nega)
    return {**shared, **posi}


def _fixed_loss(pipe: QwenImagePipeline, inputs: dict) -> float:
    """The SFT loss at fixed timesteps and noise: a deterministic yardstick."""
    x0 = inputs["input_latents"]
    generator = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for t in EVAL_TIMESTEPS:
            noise = torch.randn(x0.shape, generator=generator)
            timestep = torch.tensor([float(t)])
            latents = pipe.scheduler.add_noise(x0, noise, timestep)
            pred = pipe.model_fn(**{**inputs, "latents": latents, "timestep": timestep})
            total += torch.nn.functional.mse_loss(pred, noise - x0).item()
    return total / len(EVAL_TIMESTEPS)


def test_loss_falls_when_overfitting_one_image(
    fresh_pipe: PipeFactory, square_image: Image.Image
) -> None:
    pipe = _lora_pipe(fresh_pipe)
    data = {"image": square_image, "prompt": CAPTION}
    module = PipelineTrainingModule(pipe, FlowMatchSFTLoss, {"use_gradient_checkpointing": True})
    optimizer = torch.optim.AdamW(module.trainable_modules(), lr=5e-3)
    before = _fixed_loss(pipe, _prepared(pipe, data))
    torch.manual_seed(0)
    for _ in range(40):
        loss = module(data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _fixed_loss(pipe, _prepared(pipe, data))
    print(f"overfit one image: fixed-set loss {before:.3f} -> {after:.3f}")
    assert after < 0.85 * before
    assert all(n.startswith("pipe.dit.") for n in module.trainable_param_names())


def _grads(pipe: QwenImagePipeline, inputs: dict, **flags: bool) -> dict[str, torch.Tensor]:
    x0 = inputs["input_latents"]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor([600.0])
    latents = pipe.scheduler.add_noise(x0, noise, timestep)
    pred = pipe.model_fn(**{**inputs, "latents": latents, "timestep": timestep, **flags})
    (pred - (noise - x0)).pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in pipe.dit.named_parameters() if p.grad is not None}
    pipe.dit.zero_grad()
    return grads


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(
    fresh_pipe: PipeFactory, square_image: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = _lora_pipe(fresh_pipe)
    torch.nn.init.normal_(pipe.dit.transformer_blocks[0].attn.to_q.lora_B.default.weight, std=0.1)
    inputs = _prepared(pipe, {"image": square_image, "prompt": CAPTION})
    calls: list[int] = []
    block_class = type(pipe.dit.transformer_blocks[0])
    forward = block_class.forward
    # count block runs at the class level: checkpointing's recompute bypasses module hooks
    monkeypatch.setattr(
        block_class, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    )
    plain = _grads(pipe, inputs, use_gradient_checkpointing=False)
    plain_calls = len(calls)
    ckpt = _grads(pipe, inputs, use_gradient_checkpointing=True)
    ckpt_calls = len(calls) - plain_calls
    offload = _grads(
        pipe, inputs, use_gradient_checkpointing=True, use_gradient_checkpointing_offload=True
    )
    assert plain_calls == 2 and ckpt_calls == 4  # each block runs again in backward
    # 48 LoRA tensors; the last block's text-stream output (to_add_out, txt_mlp) feeds nothing
    assert plain.keys() == ckpt.keys() == offload.keys() and len(plain) == 44
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(offload[name], plain[name], rtol=1e-5, atol=1e-7)


def test_a_batch_of_images_and_prompts_trains(
    fresh_pipe: PipeFactory, square_image: Image.Image
) -> None:
    pipe = _lora_pipe(fresh_pipe)
    flipped = square_image.transpose(0)  # PIL.Image.FLIP_LEFT_RIGHT
    data = {"image": [square_image, flipped], "prompt": ["a red circle", CAPTION]}
    inputs = _prepared(pipe, data)
    assert inputs["input_latents"].shape == inputs["noise"].shape == (2, 16, 8, 8)
    assert inputs["prompt_emb"].shape[0] == 2 and inputs["prompt_emb_mask"] is not None
    assert not torch.equal(inputs["input_latents"][0], inputs["input_latents"][1])
    one = _prepared(pipe, {"image": flipped, "prompt": CAPTION})
    torch.testing.assert_close(
        inputs["input_latents"][1:], one["input_latents"], rtol=1e-4, atol=1e-5
    )
    loss = PipelineTrainingModule(pipe, FlowMatchSFTLoss)(data)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in pipe.dit.parameters())


def test_img2img_starts_from_the_noised_image(
    tiny_pipe: QwenImagePipeline, square_image: Image.Image
) -> None:
    gen = dict(
        height=64,
        width=64,
        num_inference_steps=4,
        cfg_scale=1.0,
        seed=2,
        progress=False,
        output_type="latent",
    )
    text_only = tiny_pipe("a cat", **gen)
    full_strength = tiny_pipe("a cat", input_image=square_image, denoising_strength=1.0, **gen)
    torch.testing.assert_close(full_strength, text_only, rtol=0, atol=1e-6)  # sigma 1: pure noise
    x0 = tiny_pipe.encode_image(square_image)
    light = tiny_pipe("a cat", input_image=square_image, denoising_strength=0.3, **gen)
    print(
        "img2img distance to the input latents:",
        (light - x0).abs().mean().item(),
        (text_only - x0).abs().mean().item(),
    )
    assert (light - x0).abs().mean() < 0.5 * (text_only - x0).abs().mean()


def test_generation_during_training_keeps_the_training_schedule(fresh_pipe: PipeFactory) -> None:
    pipe = _lora_pipe(fresh_pipe)
    train_timesteps = pipe.scheduler.timesteps.clone()
    image = pipe("a cat", height=64, width=64, num_inference_steps=2, progress=False)
    assert image.size == (64, 64)
    assert pipe.scheduler.training and torch.equal(pipe.scheduler.timesteps, train_timesteps)
