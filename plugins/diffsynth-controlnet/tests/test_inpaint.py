"""The inpainting ControlNet (4 extra mask channels) against diffusers' inpaint pipeline."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

PROMPT = "a red box on a plain background"
SIZE = dict(height=64, width=64, num_inference_steps=4)


@pytest.fixture(scope="module")
def inpaint_dir(tiny_dir, tmp_path_factory) -> Any:  # noqa: ANN001
    from diffusers import QwenImageTransformer2DModel

    from diffsynth_controlnet.tiny import tiny_controlnet

    dit = QwenImageTransformer2DModel.from_pretrained(str(tiny_dir / "transformer"))
    folder = tmp_path_factory.mktemp("inpaint-controlnet")
    tiny_controlnet(dit, inpaint=True).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def inpaint_pipe(load_pipe, inpaint_dir) -> Any:  # noqa: ANN001
    return load_pipe(controlnet=str(inpaint_dir))


def mask_image() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 43, 43), fill=255)
    return mask


def test_inpaint_matches_diffusers(
    tiny_dir, inpaint_dir, inpaint_pipe, control_a, initial_latents, monkeypatch
) -> None:  # noqa: ANN001
    from diffusers import QwenImageControlNetInpaintPipeline, QwenImageControlNetModel
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from diffsynth_qwen_image.latents import pack_latents

    # diffusers samples the masked image's latents without a generator; compare on the mode
    monkeypatch.setattr(
        DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode()
    )
    dpipe = QwenImageControlNetInpaintPipeline.from_pretrained(
        str(tiny_dir), controlnet=QwenImageControlNetModel.from_pretrained(str(inpaint_dir))
    )
    dpipe.set_progress_bar_config(disable=True)
    kwargs = dict(control_image=control_a, control_mask=mask_image())
    mine = inpaint_pipe(
        PROMPT,
        latents=initial_latents,
        cfg_scale=1.0,
        progress=False,
        output_type="latent",
        **SIZE,
        **kwargs,
    )
    ref = dpipe(
        PROMPT, latents=initial_latents, true_cfg_scale=1.0, output_type="latent", **SIZE, **kwargs
    ).images
    diff = (pack_latents(mine) - ref).abs().max().item()
    print(f"parity inpaint: max abs diff {diff:.2e}")
    assert diff < 1e-5
    other_mask = Image.new("L", (64, 64), 0)
    moved = inpaint_pipe(
        PROMPT,
        latents=initial_latents,
        cfg_scale=1.0,
        progress=False,
        output_type="latent",
        **SIZE,
        control_image=control_a,
        control_mask=other_mask,
    )
    assert (moved - mine).abs().max().item() > 1e-3  # the mask matters


def test_inpaint_controlnet_needs_a_mask(inpaint_pipe, control_a) -> None:  # noqa: ANN001
    from diffsynth_core.errors import ConfigError

    with pytest.raises(ConfigError, match="control_mask"):
        inpaint_pipe(PROMPT, control_image=control_a, progress=False, **SIZE)


def test_a_mask_for_a_plain_controlnet_is_refused(tiny_pipe, control_a) -> None:  # noqa: ANN001
    from diffsynth_core.errors import ConfigError

    with pytest.raises(ConfigError, match="not an inpainting one"):
        tiny_pipe(
            PROMPT, control_image=control_a, control_mask=mask_image(), progress=False, **SIZE
        )


def test_mask_channel_is_one_where_the_image_is_kept() -> None:
    from diffsynth_controlnet.conditioning import binarize_mask
    from diffsynth_controlnet.units import mask_channel, mask_tensor

    class Pipe:
        device, torch_dtype = torch.device("cpu"), torch.float32

    channel = mask_channel(Pipe(), mask_tensor([binarize_mask(mask_image())]), (8, 8))
    assert channel.shape == (1, 1, 8, 8)
    assert channel[0, 0, 3, 3] == 0 and channel[0, 0, 0, 0] == 1  # repainted centre, kept border
    assert set(channel.unique().tolist()) == {0.0, 1.0}
