"""Our ControlNet pipeline against diffusers' QwenImageControlNetPipeline (tiny, fp32, CPU).

diffusers draws the control latents from the VAE posterior with the pipeline's generator; we
take its mode (a control signal should not depend on a random draw). The reference is made
deterministic the same way, by patching its ``retrieve_latents`` to the mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

PROMPT = "a red box on a plain background"
TOL = 1e-5
SIZE = dict(height=64, width=64, num_inference_steps=6)


@pytest.fixture()
def mode_latents(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_controlnet as module

    monkeypatch.setattr(
        module, "retrieve_latents", lambda output, generator=None: output.latent_dist.mode()
    )


def ours(pipe: Any, latents: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    from diffsynth_qwen_image.latents import pack_latents

    out = pipe(PROMPT, latents=latents, progress=False, output_type="latent", **SIZE, **kwargs)
    return pack_latents(out)


def theirs(
    dpipe: Any, latents: torch.Tensor, cfg_scale: float = 1.0, **kwargs: Any
) -> torch.Tensor:
    negative = {"negative_prompt": "blurry", "true_cfg_scale": cfg_scale} if cfg_scale > 1 else {}
    return dpipe(PROMPT, latents=latents, output_type="latent", **SIZE, **negative, **kwargs).images


@pytest.mark.parametrize(
    ("scale", "start", "end", "cfg"),
    [(1.0, 0.0, 1.0, 1.0), (0.7, 0.2, 0.8, 1.0), (1.3, 0.0, 0.5, 4.0)],
)
def test_one_controlnet_matches_diffusers(
    tiny_pipe, diffusers_pipe, mode_latents, control_a, initial_latents, scale, start, end, cfg
) -> None:  # noqa: ANN001
    mine = ours(
        tiny_pipe, initial_latents, control_image=control_a, controlnet_scale=scale,
        control_start=start, control_end=end, cfg_scale=cfg, negative_prompt="blurry",
    )  # fmt: skip
    ref = theirs(
        diffusers_pipe, initial_latents, cfg, control_image=control_a,
        controlnet_conditioning_scale=scale, control_guidance_start=start, control_guidance_end=end,
    )  # fmt: skip
    diff = (mine - ref).abs().max().item()
    print(f"parity scale={scale} window=[{start},{end}] cfg={cfg}: max abs diff {diff:.2e}")
    assert diff < TOL
    # the comparison has teeth: without the ControlNet the result moves far more than TOL
    plain = ours(tiny_pipe, initial_latents, cfg_scale=cfg, negative_prompt="blurry")
    assert (plain - ref).abs().max().item() > 1e3 * TOL


def test_union_controlnet_with_two_images_matches_diffusers_multi(
    diffusers_pipe, tiny_pipe, mode_latents, control_a, control_b, initial_latents
) -> None:  # noqa: ANN001
    from diffusers import QwenImageControlNetPipeline, QwenImageMultiControlNetModel

    parts = {
        **diffusers_pipe.components,
        "controlnet": QwenImageMultiControlNetModel([diffusers_pipe.controlnet]),
    }
    dpipe = QwenImageControlNetPipeline(**parts)
    dpipe.set_progress_bar_config(disable=True)
    mine = ours(
        tiny_pipe,
        initial_latents,
        control_image=[control_a, control_b],
        controlnet_scale="0.6,0.9",
        cfg_scale=1.0,
    )
    ref = theirs(
        dpipe,
        initial_latents,
        control_image=[control_a, control_b],
        controlnet_conditioning_scale=[0.6, 0.9],
    )
    diff = (mine - ref).abs().max().item()
    print(f"parity union x2: max abs diff {diff:.2e}")
    assert diff < TOL
    only_a = ours(
        tiny_pipe, initial_latents, control_image=[control_a], controlnet_scale=0.6, cfg_scale=1.0
    )
    assert (only_a - ref).abs().max().item() > 1e3 * TOL


def test_decoded_image_matches_diffusers(
    tiny_pipe, diffusers_pipe, mode_latents, control_a, initial_latents
) -> None:  # noqa: ANN001
    mine = tiny_pipe(
        PROMPT,
        latents=initial_latents,
        control_image=control_a,
        cfg_scale=1.0,
        progress=False,
        output_type="pt",
        **SIZE,
    )
    ref = diffusers_pipe(
        PROMPT, latents=initial_latents, control_image=control_a, output_type="pt", **SIZE
    ).images
    assert (mine - (ref * 2 - 1)).abs().max().item() < TOL
