"""Our pipeline gives what diffusers' WanVACEPipeline gives for the same weights and inputs.

fp32 on the CPU, 9 frames of 64x64, 3 UniPC steps with CFG 5. Both draw the starting noise
from the same seed on a CPU generator, so nothing is passed between them but the inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from vace_helpers import random_clip, random_mask

PROMPT = "a red ball bounces over grass"
NEGATIVE = "blurry, low quality"
COMMON = {"num_frames": 9, "height": 64, "width": 64, "num_inference_steps": 3}


def conditions() -> dict[str, dict[str, Any]]:
    clip, mask = random_clip(0), random_mask(1)
    odd_reference = random_clip(2, frames=1, size=40)[0].resize((40, 24))  # fitted on a canvas
    return {
        "text only": {},
        "control video": {"vace_video": clip},
        "video and mask": {"vace_video": clip, "vace_video_mask": mask},
        "video, mask, two references": {
            "vace_video": clip,
            "vace_video_mask": mask,
            "vace_reference_image": [odd_reference, clip[3]],
        },
    }


@pytest.fixture(scope="module")
def diffusers_pipe(tiny_dir: Path) -> Any:
    from diffusers import WanVACEPipeline

    pipe = WanVACEPipeline.from_pretrained(tiny_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipe: Any, seed: int, output_type: str, scale: float = 1.0, **inputs: Any) -> Any:
    return pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, video=inputs.get("vace_video"), mask=inputs.get("vace_video_mask"),
        reference_images=inputs.get("vace_reference_image"), conditioning_scale=scale, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(seed), output_type=output_type, **COMMON,
    ).frames  # fmt: skip


def run_ours(pipe: Any, seed: int, output_type: str, scale: float = 1.0, **inputs: Any) -> Any:
    return pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        cfg_scale=5.0,
        seed=seed,
        vace_scale=scale,
        progress=False,
        output_type=output_type,
        **COMMON,
        **inputs,
    )


@pytest.mark.parametrize("case", list(conditions()))
def test_final_latents_match_diffusers(pipe: Any, diffusers_pipe: Any, case: str) -> None:
    inputs = conditions()[case]
    ours = run_ours(pipe, 7, "latent", 0.8, **inputs)
    theirs = run_diffusers(diffusers_pipe, 7, "latent", 0.8, **inputs)
    assert (
        ours.shape == theirs.shape == (1, 16, 3 + len(inputs.get("vace_reference_image", [])), 8, 8)
    )
    diff = (ours - theirs).abs().max().item()
    print(
        f"{case}: max |ours - diffusers| = {diff:.3g} (latents mean |x| {theirs.abs().mean():.3f})"
    )
    assert diff <= 1e-5


def test_decoded_frames_match_diffusers(pipe: Any, diffusers_pipe: Any) -> None:
    inputs = conditions()["video and mask"]
    ours = run_ours(pipe, 3, "np", **inputs)
    theirs = run_diffusers(diffusers_pipe, 3, "np", **inputs)[0]
    assert ours.shape == theirs.shape == (9, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_conditioning_matches_diffusers(pipe: Any, diffusers_pipe: Any) -> None:
    """The 96-channel VACE context equals diffusers' prepare_video_latents + prepare_masks."""
    inputs = conditions()["video, mask, two references"]
    shared, _, _ = pipe.run_units(
        {**COMMON, "batch_size": 1, "seed": 0, "cfg_scale": 1.0, **inputs}, {"prompt": PROMPT}, {}
    )
    d = diffusers_pipe
    video, mask, refs = d.preprocess_conditions(
        inputs["vace_video"],
        inputs["vace_video_mask"],
        inputs["vace_reference_image"],
        1,
        64,
        64,
        9,
        torch.float32,
        torch.device("cpu"),
    )
    expected = torch.cat(
        [d.prepare_video_latents(video, mask, refs), d.prepare_masks(mask, refs)], dim=1
    )
    assert shared["vace_context"].shape == expected.shape == (1, 96, 5, 8, 8)
    assert torch.equal(shared["vace_context"], expected)


def test_prompt_embeddings_match_diffusers(pipe: Any, diffusers_pipe: Any) -> None:
    ours = pipe.encode_prompt([PROMPT, "  two &amp; spaces  "])
    theirs, _ = diffusers_pipe.encode_prompt(
        [PROMPT, "  two &amp; spaces  "], do_classifier_free_guidance=False, max_sequence_length=512
    )
    assert ours.shape == (2, 512, 64)
    assert torch.equal(ours, theirs)
    assert ours[0, 20:].abs().sum() == 0  # the padding is zeros, not the encoder's pad output


def test_pil_frames_and_mp4(pipe: Any, diffusers_pipe: Any, tmp_path: Path) -> None:
    ours = run_ours(pipe, 5, "pil")
    theirs = run_diffusers(diffusers_pipe, 5, "pil")[0]
    assert len(ours) == 9 and ours[0].size == (64, 64)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs, strict=True)
    )
    path = pipe.save_video(ours, tmp_path / "clip.mp4")
    from diffsynth_core.data.video import read_frames

    assert len(read_frames(path, 81)) == 9
