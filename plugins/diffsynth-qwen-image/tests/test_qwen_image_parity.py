"""Our pipeline against diffusers' QwenImagePipeline on the same tiny weights (fp32, CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from diffsynth_qwen_image.latents import pack_latents, unpack_latents
from diffsynth_qwen_image.pipeline import QwenImagePipeline
from diffsynth_qwen_image.units import PROMPT_TEMPLATE, PROMPT_TEMPLATE_DROP

PROMPT = "a red circle on a plain background"
TOL = 1e-5


def _ours(pipe: QwenImagePipeline, **kwargs: Any) -> torch.Tensor:
    return pipe(progress=False, output_type="pt", **kwargs)


def _theirs(
    dpipe: Any, cfg_scale: float, seed: int, negative_prompt: str | None, **kwargs: Any
) -> torch.Tensor:
    out = dpipe(
        true_cfg_scale=cfg_scale,
        negative_prompt=negative_prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pt",
        **kwargs,
    ).images
    return out * 2 - 1  # diffusers returns [0, 1]; ours is the decoder's [-1, 1]


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_image_matches_diffusers(
    tiny_pipe: QwenImagePipeline, diffusers_pipe: Any, cfg_scale: float
) -> None:
    size = dict(height=64, width=96, num_inference_steps=4)
    ours = _ours(
        tiny_pipe, prompt=PROMPT, negative_prompt="blurry", cfg_scale=cfg_scale, seed=3, **size
    )
    theirs = _theirs(
        diffusers_pipe, cfg_scale, 3, "blurry" if cfg_scale > 1 else None, prompt=PROMPT, **size
    )
    assert ours.shape == theirs.shape == (1, 3, 64, 96)
    diff = (ours - theirs).abs().max().item()
    print(f"parity cfg={cfg_scale}: max abs diff {diff:.2e}")
    assert diff < TOL
    # the comparison has teeth: another seed moves the image far more than the tolerance
    other = _ours(
        tiny_pipe, prompt=PROMPT, negative_prompt="blurry", cfg_scale=cfg_scale, seed=4, **size
    )
    assert (other - ours).abs().max().item() > 1e3 * TOL


def test_true_cfg_changes_the_image_as_diffusers_does(
    tiny_pipe: QwenImagePipeline, diffusers_pipe: Any
) -> None:
    size = dict(height=64, width=64, num_inference_steps=3)
    plain = tiny_pipe(PROMPT, cfg_scale=1.0, seed=0, progress=False, output_type="latent", **size)
    guided = tiny_pipe(
        PROMPT,
        negative_prompt="blurry",
        cfg_scale=6.0,
        seed=0,
        progress=False,
        output_type="latent",
        **size,
    )
    ref = diffusers_pipe(
        PROMPT, negative_prompt="blurry", true_cfg_scale=6.0, output_type="latent",
        generator=torch.Generator().manual_seed(0), **size,
    ).images  # fmt: skip
    assert (guided - plain).abs().max() > 1e-2
    assert (pack_latents(guided) - ref).abs().max() < TOL


def test_batch_of_prompts_pads_with_a_mask(
    tiny_pipe: QwenImagePipeline, diffusers_pipe: Any
) -> None:
    prompts = ["a cat", "a watercolor painting of mountains and a lake at sunset"]
    ours = tiny_pipe.units[-1].process(tiny_pipe, prompts)
    ref, ref_mask = diffusers_pipe.encode_prompt(prompts, device="cpu", max_sequence_length=512)
    assert (
        ours["prompt_emb_mask"] is not None
        and ours["prompt_emb_mask"][0].sum() < ours["prompt_emb_mask"][1].sum()
    )
    assert torch.equal(ours["prompt_emb_mask"], ref_mask)
    assert (ours["prompt_emb"] - ref).abs().max() < 1e-6
    size = dict(height=64, width=64, num_inference_steps=2)
    image = tiny_pipe(prompts, cfg_scale=1.0, seed=1, progress=False, output_type="latent", **size)
    theirs = diffusers_pipe(
        prompts,
        true_cfg_scale=1.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(1),
        **size,
    ).images
    assert (pack_latents(image) - theirs).abs().max() < TOL


def test_template_prefix_is_dropped(tiny_pipe: QwenImagePipeline) -> None:
    tokens = tiny_pipe.tokenizer(PROMPT_TEMPLATE.format("a cat"))["input_ids"]
    emb = tiny_pipe.units[-1].process(tiny_pipe, "a cat")["prompt_emb"]
    assert emb.shape[1] == len(tokens) - PROMPT_TEMPLATE_DROP
    limited = tiny_pipe.units[-1].process(tiny_pipe, "a cat", max_sequence_length=3)["prompt_emb"]
    assert torch.equal(limited, emb[:, :3])


def test_user_latents_in_any_layout_match_diffusers(
    tiny_pipe: QwenImagePipeline, diffusers_pipe: Any
) -> None:
    grid = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(7))
    size = dict(height=64, width=64, num_inference_steps=2)
    theirs = diffusers_pipe(PROMPT, latents=pack_latents(grid), output_type="latent", **size).images
    for layout in (grid, grid[:, :, None], pack_latents(grid)):
        ours = tiny_pipe(
            PROMPT, latents=layout, cfg_scale=1.0, progress=False, output_type="latent", **size
        )
        assert (pack_latents(ours) - theirs).abs().max() < TOL


def test_packing_matches_diffusers(diffusers_pipe: Any) -> None:
    grid = torch.randn(2, 16, 6, 10)
    packed = diffusers_pipe._pack_latents(grid[:, None], 2, 16, 6, 10)
    assert torch.equal(pack_latents(grid), packed)
    unpacked = diffusers_pipe._unpack_latents(packed, 48, 80, 8)
    assert torch.equal(unpack_latents(packed, 6, 10), unpacked[:, :, 0])


@pytest.mark.parametrize(("steps", "size"), [(4, 64), (30, 1024), (50, 1328)])
def test_inference_sigmas_match_diffusers(
    tiny_pipe: QwenImagePipeline, steps: int, size: int
) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

    from diffsynth_qwen_image.tiny import SCHEDULER_CONFIG

    seq = (size // 16) ** 2
    ref = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    mu = calculate_shift(seq, 256, 8192, 0.5, 0.9)
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    tiny_pipe.scheduler.set_timesteps(steps, image_seq_len=seq)
    assert (tiny_pipe.scheduler.sigmas - ref.sigmas).abs().max() < 1e-6
    assert (tiny_pipe.scheduler.timesteps - ref.timesteps).abs().max() < 1e-3


def test_training_schedule_is_diffsynth_studios(tiny_pipe: QwenImagePipeline) -> None:
    import math

    scheduler = tiny_pipe.scheduler
    scheduler.set_timesteps(1000, training=True)
    assert len(scheduler.timesteps) == 1000 and scheduler.timesteps[0] == pytest.approx(1000.0)
    assert float(scheduler.sigmas[-1]) == pytest.approx(0.02, abs=1e-6)  # shift_terminal
    s = 0.5  # an interior point: exponential shift with mu 0.8, then the terminal stretch
    shifted = math.exp(0.8) / (math.exp(0.8) + (1 / s - 1))
    last = math.exp(0.8) / (math.exp(0.8) + (1 / 0.001 - 1))
    stretched = 1 - (1 - shifted) / ((1 - last) / 0.98)
    assert float(scheduler.sigmas[500]) == pytest.approx(stretched, abs=1e-6)
    assert scheduler.training_weights.mean().item() == pytest.approx(1.0, abs=1e-5)
