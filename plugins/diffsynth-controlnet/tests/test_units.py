"""What the ControlNet unit does to generation: effects, not just the absence of errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

PROMPT = "a red box on a plain background"
SIZE = dict(height=64, width=64, num_inference_steps=3)


def gen(pipe: Any, latents: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    return pipe(
        PROMPT,
        latents=latents,
        cfg_scale=1.0,
        progress=False,
        output_type="latent",
        **SIZE,
        **kwargs,
    )


def test_the_unit_joins_the_qwen_image_pipeline_from_outside(tiny_pipe) -> None:  # noqa: ANN001
    from diffsynth_qwen_image.pipeline import QwenImagePipeline

    assert type(tiny_pipe) is QwenImagePipeline  # the Qwen-Image plugin's own class, unchanged
    assert [u.name for u in tiny_pipe.units[-2:]] == [
        "QwenImageUnit_ControlImageEmbedder",
        "QwenImageUnit_ControlNet",
    ]
    assert "controlnet" in tiny_pipe.model_names and tiny_pipe.controlnet is not None


def test_control_image_changes_the_output(tiny_pipe, control_a, control_b, initial_latents) -> None:  # noqa: ANN001
    a, b = (
        gen(tiny_pipe, initial_latents, control_image=control_a),
        gen(tiny_pipe, initial_latents, control_image=control_b),
    )
    assert (a - b).abs().max().item() > 1e-2
    assert torch.equal(
        a, gen(tiny_pipe, initial_latents, control_image=control_a)
    )  # and deterministically


def test_scale_zero_or_no_image_equals_plain_qwen_image(
    tiny_pipe, control_a, initial_latents
) -> None:  # noqa: ANN001
    plain = gen(tiny_pipe, initial_latents)
    assert torch.equal(
        gen(tiny_pipe, initial_latents, control_image=control_a, controlnet_scale=0.0), plain
    )
    assert (
        gen(tiny_pipe, initial_latents, control_image=control_a) - plain
    ).abs().max().item() > 1e-2


def test_window_limits_the_steps_with_control(tiny_pipe, control_a, initial_latents) -> None:  # noqa: ANN001
    full = gen(tiny_pipe, initial_latents, control_image=control_a)
    first = gen(tiny_pipe, initial_latents, control_image=control_a, control_end=1 / 3)
    plain = gen(tiny_pipe, initial_latents)
    assert 0 < (first - plain).abs().max() and 0 < (first - full).abs().max()
    # a window that ends before the first step is over: no control at all
    assert torch.equal(
        gen(tiny_pipe, initial_latents, control_image=control_a, control_end=0.2), plain
    )


def test_same_aspect_control_is_resized_to_the_target(
    tiny_pipe, initial_latents, make_edge_image
) -> None:  # noqa: ANN001
    edge_image = make_edge_image
    small, big = edge_image(), edge_image((128, 128), (32, 24, 96, 88))
    a, b = (
        gen(tiny_pipe, initial_latents, control_image=small),
        gen(tiny_pipe, initial_latents, control_image=big),
    )
    plain = gen(tiny_pipe, initial_latents)
    # resized, not ignored: close to the same-size control, far from no control
    assert (a - b).abs().max() < 0.5 * (a - plain).abs().max()


def test_control_of_another_aspect_ratio_is_a_clear_error(
    tiny_pipe, initial_latents, make_edge_image
) -> None:  # noqa: ANN001
    edge_image = make_edge_image
    from diffsynth_controlnet.conditioning import ControlImageMismatchError

    with pytest.raises(ControlImageMismatchError, match="aspect ratios differ"):
        gen(tiny_pipe, initial_latents, control_image=edge_image((64, 128)))


def test_a_few_pixels_of_rounding_are_accepted(make_edge_image) -> None:  # noqa: ANN001
    edge_image = make_edge_image
    from diffsynth_controlnet.conditioning import fit_to_target

    assert fit_to_target(edge_image((1000, 750)), 992, 736).size == (
        992,
        736,
    )  # the resize rule's floor
    assert fit_to_target(edge_image((70, 64)), 64, 64).size == (64, 64)


def test_settings_broadcast_and_validate() -> None:
    from diffsynth_controlnet.conditioning import control_settings
    from diffsynth_core.errors import ConfigError

    union = control_settings(2, 1, "0.5,0.8", 0.0, [0.5, 1.0])
    assert [(s.net, s.scale, s.end) for s in union] == [(0, 0.5, 0.5), (0, 0.8, 1.0)]
    assert [s.net for s in control_settings(2, 2)] == [0, 1]
    with pytest.raises(ConfigError, match="3 control images for 2 ControlNets"):
        control_settings(3, 2)
    with pytest.raises(ConfigError, match="start"):
        control_settings(1, 1, start=0.6, end=0.4)
    with pytest.raises(ConfigError, match="2 values for 3"):
        control_settings(3, 1, scale="1,2")


def test_two_controlnets_sum_their_residuals(
    load_pipe, tiny_dir, control_a, control_b, initial_latents, tiny_pipe
) -> None:  # noqa: ANN001
    folder = str(tiny_dir / "controlnet")
    pipe = load_pipe(controlnet=f"{folder},{folder}")
    assert isinstance(pipe.controlnet, torch.nn.ModuleList) and len(pipe.controlnet) == 2
    two = gen(
        pipe, initial_latents, control_image=[control_a, control_b], controlnet_scale=[0.5, 1.0]
    )
    # the same net twice = one Union net given both images
    union = gen(
        tiny_pipe,
        initial_latents,
        control_image=[control_a, control_b],
        controlnet_scale=[0.5, 1.0],
    )
    assert (two - union).abs().max() < 1e-5


def test_generate_option_controlnet_loads_at_call_time(
    fresh_pipe, tiny_dir, control_a, initial_latents, tiny_pipe
) -> None:  # noqa: ANN001
    from diffsynth_core.errors import ConfigError

    pipe = fresh_pipe(controlnet_layers=1)  # a fresh, untrained ControlNet: no effect yet
    with_new = gen(pipe, initial_latents, control_image=control_a)
    assert torch.equal(with_new, gen(pipe, initial_latents))
    loaded = gen(
        pipe, initial_latents, control_image=control_a, controlnet=str(tiny_dir / "controlnet")
    )
    assert (loaded - gen(tiny_pipe, initial_latents, control_image=control_a)).abs().max() < 1e-6
    pipe.controlnet = None
    with pytest.raises(ConfigError, match="no ControlNet is loaded"):
        gen(pipe, initial_latents, control_image=control_a, controlnet="")
