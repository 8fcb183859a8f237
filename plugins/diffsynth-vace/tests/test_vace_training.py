"""Training through the core's PipelineTrainingModule and FlowMatchSFTLoss.

Loss falls when overfitting one clip; LoRA on the DiT or on the VACE blocks and full training
of the VACE blocks change exactly the weights they should; gradient checkpointing changes no
gradient; batches of clips with references train.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from vace_helpers import moving_square, random_clip, random_mask

from diffsynth_core.training.losses import FlowMatchSFTLoss
from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
from diffsynth_vace.family import LORA_TARGETS


def sample(frames: int = 9, size: int = 64, control: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "prompt": "a white square moves right",
        "video": moving_square(frames, size),
    }
    if control:
        data["vace_video"] = random_clip(3, frames, size)
        data["vace_video_mask"] = random_mask(4, frames, size)
    return data


def module(pipe: Any, checkpointing: bool = True) -> PipelineTrainingModule:
    return PipelineTrainingModule(
        pipe, FlowMatchSFTLoss, {"use_gradient_checkpointing": checkpointing}
    )


def fixed_loss(
    model: PipelineTrainingModule, data: dict[str, Any], seeds: range = range(4)
) -> float:
    """Mean loss over fixed (timestep, noise) draws: comparable before and after training."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        losses = []
        for seed in seeds:
            torch.manual_seed(seed)
            losses.append(model(data).item())
    return sum(losses) / len(losses)


def step(model: PipelineTrainingModule, data: dict[str, Any], lr: float) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model(data).backward()
    optimizer.step()


def test_training_schedule_is_wan_shift_5(pipe: Any) -> None:
    switch_pipe_to_training_mode(pipe)
    s = torch.linspace(1, 0, 1001)[:-1]
    assert torch.allclose(pipe.scheduler.sigmas, 5 * s / (1 + 4 * s), atol=1e-6)


def test_loss_falls_when_overfitting_one_clip(pipe: Any) -> None:
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=8
    )
    model, data = module(pipe), sample(frames=5, size=32, control=False)
    before = fixed_loss(model, data)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    torch.manual_seed(0)
    for _ in range(25):
        optimizer.zero_grad()
        model(data).backward()
        optimizer.step()
    after = fixed_loss(model, data)
    print(f"overfit one clip: loss {before:.3f} -> {after:.3f}")
    assert after < 0.8 * before


@pytest.mark.parametrize("base", ["dit", "vace"])
def test_lora_step_changes_only_its_lora(pipe: Any, base: str) -> None:
    switch_pipe_to_training_mode(
        pipe, lora_base_model=base, lora_target_modules=LORA_TARGETS, lora_rank=4
    )
    before = {n: p.detach().clone() for n, p in pipe.named_parameters()}
    step(module(pipe), sample(), lr=1e-2)
    changed = {n for n, p in pipe.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_B" in n or "lora_A" in n for n in changed)
    assert any(n.startswith("dit.vace_blocks.") for n in changed)
    assert any(n.startswith("dit.blocks.") for n in changed) == (base == "dit")


def test_full_vace_training_changes_only_vace(pipe: Any) -> None:
    switch_pipe_to_training_mode(pipe, trainable_models="vace")
    trainable = {n for n, p in pipe.named_parameters() if p.requires_grad}
    vace = {
        n
        for n in dict(pipe.named_parameters())
        if n.startswith(("dit.vace_blocks.", "dit.vace_patch_embedding."))
    }
    assert trainable == vace
    before = {n: p.detach().clone() for n, p in pipe.named_parameters()}
    step(module(pipe), sample(), lr=1e-3)
    changed = {n for n, p in pipe.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= vace
    assert len(changed) > 0.9 * len(vace)


def test_gradient_checkpointing_changes_no_gradient(pipe: Any) -> None:
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=4
    )
    with torch.no_grad():
        for name, param in pipe.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)  # B = 0 would give A no gradient to compare
    grads = []
    for checkpointing in (False, True):
        pipe.zero_grad()
        torch.manual_seed(0)
        module(pipe, checkpointing)(sample()).backward()
        grads.append({n: p.grad.clone() for n, p in pipe.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_batch_of_clips_with_references(pipe: Any) -> None:
    """Batch size 2, one reference image each: the reference latents lead x0 and the context."""
    switch_pipe_to_training_mode(
        pipe, lora_base_model="vace", lora_target_modules=LORA_TARGETS, lora_rank=4
    )
    one, two = sample(), sample()
    two["vace_video_mask"] = None  # a row without a mask: all of it is generated
    batch = {k: [one[k], two[k]] for k in one}
    batch["vace_reference_image"] = [random_clip(5, 1, 48)[0], random_clip(6, 1, 64)[0]]
    shared, posi, nega = pipe.training_inputs(batch)
    shared, posi, _ = pipe.run_units({"cfg_scale": 1, **shared}, posi, nega)
    assert shared["input_latents"].shape == (2, 16, 1 + 3, 8, 8)
    assert shared["vace_context"].shape == (2, 96, 1 + 3, 8, 8)
    assert posi["context"].shape == (2, 512, 64)
    loss = module(pipe)(batch)
    assert torch.isfinite(loss) and loss.requires_grad
