"""Our pipeline against diffusers' FluxPipeline on the same tiny weights (fp32, CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from diffsynth_core.errors import ConfigError
from diffsynth_flux.latents import pack_latents, unpack_latents

PROMPT = "a red circle on a plain background"
TOL = 1e-5
SIZE = dict(height=64, width=96, num_inference_steps=3, max_sequence_length=32)


def _theirs(dpipe: Any, seed: int, **kwargs: Any) -> Any:
    return dpipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images


@pytest.mark.parametrize(
    ("variant", "guidance"), [("flux-dev", 3.5), ("flux-dev", 7.0), ("flux-schnell", 0.0)]
)
def test_image_matches_diffusers(
    pipes: dict[str, Any], diffusers_pipes: dict[str, Any], variant: str, guidance: float
) -> None:
    pipe, dpipe = pipes[variant], diffusers_pipes[variant]
    ours = pipe(
        PROMPT, seed=3, guidance_scale=guidance, progress=False, output_type="latent", **SIZE
    )
    theirs = _theirs(dpipe, 3, prompt=PROMPT, guidance_scale=guidance, output_type="latent", **SIZE)
    diff = (pack_latents(ours) - theirs).abs().max().item()
    image = pipe(PROMPT, seed=3, guidance_scale=guidance, progress=False, output_type="pt", **SIZE)
    ref = _theirs(dpipe, 3, prompt=PROMPT, guidance_scale=guidance, output_type="pt", **SIZE)
    image_diff = ((image.clamp(-1, 1) + 1) / 2 - ref).abs().max().item()
    print(f"parity {variant} guidance={guidance}: latents {diff:.2e}, image {image_diff:.2e}")
    assert image.shape == ref.shape == (1, 3, 64, 96)
    assert diff < TOL and image_diff < TOL
    # the comparison has teeth: another seed moves the result far more than the tolerance
    other = pipe(
        PROMPT, seed=4, guidance_scale=guidance, progress=False, output_type="latent", **SIZE
    )
    assert (other - ours).abs().max().item() > 1e3 * TOL


def test_guidance_reaches_dev_only(pipes: dict[str, Any]) -> None:
    runs = {
        (v, g): pipes[v](
            PROMPT, seed=0, guidance_scale=g, progress=False, output_type="latent", **SIZE
        )
        for v in ("flux-dev", "flux-schnell")
        for g in (1.0, 6.0)
    }
    assert (runs["flux-dev", 1.0] - runs["flux-dev", 6.0]).abs().max() > 1e-3
    assert torch.equal(runs["flux-schnell", 1.0], runs["flux-schnell", 6.0])
    assert pipes["flux-dev"].dit.config.guidance_embeds
    assert not pipes["flux-schnell"].dit.config.guidance_embeds


def test_true_cfg_matches_diffusers(pipes: dict[str, Any], diffusers_pipes: dict[str, Any]) -> None:
    kwargs = dict(negative_prompt="blurry", output_type="latent", **SIZE)
    ours = pipes["flux-dev"](PROMPT, cfg_scale=4.0, seed=1, progress=False, **kwargs)
    theirs = _theirs(diffusers_pipes["flux-dev"], 1, prompt=PROMPT, true_cfg_scale=4.0, **kwargs)
    plain = pipes["flux-dev"](PROMPT, seed=1, progress=False, output_type="latent", **SIZE)
    assert (ours - plain).abs().max() > 1e-2
    assert (pack_latents(ours) - theirs).abs().max() < TOL


@pytest.mark.parametrize("variant", ["flux-dev", "flux-schnell"])
def test_prompt_embeddings_match_diffusers(
    pipes: dict[str, Any], diffusers_pipes: dict[str, Any], variant: str
) -> None:
    pipe = pipes[variant]
    prompts = ["a cat", "a watercolor painting of mountains and a lake at sunset"]
    ours = pipe.units[-1].process(pipe, prompts)
    emb, pooled, ids = diffusers_pipes[variant].encode_prompt(
        prompts, prompt_2=None, device="cpu", max_sequence_length=pipe.variant.max_sequence_length
    )
    length = pipe.variant.max_sequence_length
    assert ours["prompt_emb"].shape == emb.shape == (2, length, 32) and ids.shape == (length, 3)
    assert torch.equal(ours["prompt_emb"], emb) and torch.equal(ours["pooled_prompt_emb"], pooled)
    with pytest.raises(ConfigError, match="max-sequence-length"):
        pipe.units[-1].process(pipe, "a cat", max_sequence_length=length + 1)


def test_user_latents_in_both_layouts(
    pipes: dict[str, Any], diffusers_pipes: dict[str, Any]
) -> None:
    grid = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(7))
    theirs = diffusers_pipes["flux-dev"](
        PROMPT, latents=pack_latents(grid), output_type="latent", **SIZE
    ).images
    for layout in (grid, pack_latents(grid)):
        ours = pipes["flux-dev"](
            PROMPT, latents=layout, progress=False, output_type="latent", **SIZE
        )
        assert (pack_latents(ours) - theirs).abs().max() < TOL


def test_packing_and_ids_match_diffusers(diffusers_pipes: dict[str, Any]) -> None:
    from diffsynth_flux.latents import image_ids

    dpipe = diffusers_pipes["flux-dev"]
    grid = torch.randn(2, 16, 6, 10)
    packed = dpipe._pack_latents(grid, 2, 16, 6, 10)
    assert torch.equal(pack_latents(grid), packed)
    assert torch.equal(unpack_latents(packed, 6, 10), dpipe._unpack_latents(packed, 48, 80, 8))
    ref = dpipe._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32)
    assert torch.equal(image_ids(6, 10, torch.device("cpu"), torch.float32), ref)


@pytest.mark.parametrize(
    ("variant", "steps", "size"),
    [("flux-dev", 28, 1024), ("flux-dev", 4, 256), ("flux-schnell", 4, 1024)],
)
def test_inference_sigmas_match_diffusers(
    pipes: dict[str, Any], variant: str, steps: int, size: int
) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from diffsynth_flux.tiny import scheduler_config

    seq = (size // 16) ** 2
    ref = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config(variant))
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=calculate_shift(seq))
    scheduler = pipes[variant].scheduler
    scheduler.set_timesteps(steps, image_seq_len=seq)
    assert (scheduler.sigmas - ref.sigmas).abs().max() < 1e-6
    assert (scheduler.timesteps - ref.timesteps).abs().max() < 1e-3


def test_training_schedule_is_a_static_shift_of_3(pipes: dict[str, Any]) -> None:
    for variant in ("flux-dev", "flux-schnell"):
        scheduler = pipes[variant].scheduler
        scheduler.set_timesteps(1000, training=True)
        s = 0.5  # sigma 0.5 of the unshifted schedule: 3s / (1 + 2s)
        assert float(scheduler.sigmas[500]) == pytest.approx(3 * s / (1 + 2 * s), abs=1e-6)
        assert scheduler.timesteps[0] == pytest.approx(1000.0)
