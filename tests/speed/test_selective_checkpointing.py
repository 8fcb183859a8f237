"""--gradient-checkpointing-policy selective: the same losses and LoRA gradients as full
checkpointing and as none (tiny Qwen-Image, CPU), and the policy reaches the blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import diffsynth_core.training.module as module_py
from diffsynth_core.training.losses import FlowMatchSFTLoss
from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode

STEPS = 3


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    qwen = pytest.importorskip("diffsynth_qwen_image.tiny")
    return qwen.build_tiny(tmp_path_factory.mktemp("qwen-tiny"))


def _train(tiny: Path, **flags: Any) -> tuple[list[float], dict[str, torch.Tensor]]:
    """``STEPS`` AdamW steps of a LoRA on one image with ``flags`` as the pipeline inputs:
    the losses and the last step's LoRA gradients (every LoRA weight starts non-zero)."""
    from PIL import Image

    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_qwen_image.family import LORA_TARGETS

    pipe = load_pipeline("qwen-image", model_path=str(tiny))
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=4
    )
    generator = torch.Generator().manual_seed(7)
    for _name, param in sorted(pipe.dit.named_parameters()):
        if param.requires_grad:  # (B = 0 would leave A's gradients zero: a weaker check)
            param.data = torch.randn(param.shape, generator=generator) * 0.05
    module = PipelineTrainingModule(pipe, FlowMatchSFTLoss, flags)
    optimizer = torch.optim.AdamW(module.trainable_modules(), lr=1e-3)
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    losses: list[float] = []
    grads: dict[str, torch.Tensor] = {}
    for step in range(STEPS):
        torch.manual_seed(step)  # the same timestep and noise for every mode
        loss = module({"image": image, "prompt": "a red square"})
        loss.backward()
        losses.append(float(loss.detach()))
        grads = {n: p.grad.clone() for n, p in pipe.dit.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
    return losses, grads


def test_selective_gives_the_losses_and_gradients_of_full_and_of_none(tiny: Path) -> None:
    off = _train(tiny, use_gradient_checkpointing=False)
    full = _train(tiny, use_gradient_checkpointing=True)
    selective = _train(
        tiny, use_gradient_checkpointing=True, use_gradient_checkpointing_policy="selective"
    )
    assert len(off[1]) > 20 and off[1].keys() == full[1].keys() == selective[1].keys()
    assert len(set(off[0])) == STEPS  # the steps differ: a trained, not a frozen, run
    for other in (full, selective):
        torch.testing.assert_close(other[0], off[0], rtol=1e-5, atol=1e-7)
        for name, grad in off[1].items():
            torch.testing.assert_close(other[1][name], grad, rtol=1e-4, atol=1e-6)


def test_the_policy_reaches_every_block_and_saves_only_the_matmuls(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block's checkpoint opens the selective contexts (2 blocks, every step), and the
    policy keeps the matrix products while the pointwise ops are left to recompute."""
    contexts: list[int] = []
    create = module_py.create_selective_checkpoint_contexts
    decided: list[tuple[str, Any]] = []
    policy = module_py._save_matmuls

    def spy_create(fn: Any, *args: Any, **kwargs: Any) -> Any:
        contexts.append(1)
        return create(fn, *args, **kwargs)

    def spy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
        choice = policy(ctx, op, *args, **kwargs)
        left = {"aten.mm.default": 0, "aten.addmm.default": 1}.get(str(op))
        decided.append((str(op), choice, None if left is None else args[left].shape[-1]))
        return choice

    monkeypatch.setattr(module_py, "create_selective_checkpoint_contexts", spy_create)
    monkeypatch.setattr(module_py, "_save_matmuls", spy)
    _train(tiny, use_gradient_checkpointing=True)
    assert contexts == [] and decided == []  # full: no policy
    _train(tiny, use_gradient_checkpointing=True, use_gradient_checkpointing_policy="selective")
    assert len(contexts) == 2 * STEPS  # the tiny DiT has 2 blocks
    from torch.utils.checkpoint import CheckpointPolicy

    keep, again = CheckpointPolicy.MUST_SAVE, CheckpointPolicy.PREFER_RECOMPUTE
    saved = {op for op, choice, _ in decided if choice == keep}
    recomputed = {op for op, choice, _ in decided if choice == again}
    assert {"aten.mm.default", "aten.addmm.default"} <= saved
    assert any("attention" in op for op in saved)  # the attention op (CPU flash kernel here)
    assert {"aten.mul.Tensor", "aten.add.Tensor"} <= recomputed
    # the base's products (contraction: the width, 64) are kept; LoRA's B (rank 4) is redone
    products = [(choice, k) for op, choice, k in decided if k is not None]
    assert {k for choice, k in products if choice == keep} >= {64}
    assert {k for choice, k in products if choice == again} == {4}


def test_the_flag_reaches_the_pipeline_inputs(tiny: Path, tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState, GradientState

    from diffsynth_core.cli.run.build import build_module, make_accelerator, prepare
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager
    from diffsynth_core.testing import make_image_dataset

    reset_plugin_manager(build_plugin_manager())
    data = make_image_dataset(tmp_path / "data", 1, 32)
    cli = {
        "model": "qwen-image", "model_path": str(tiny), "dataset": str(data),
        "output": str(tmp_path / "run"), "gradient_checkpointing_policy": "selective",
    }  # fmt: skip
    try:
        run = prepare(cli, None, [])
        module, _ = build_module(run, make_accelerator(run.config))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert module.extra_inputs["use_gradient_checkpointing_policy"] == "selective"
    assert module.extra_inputs["use_gradient_checkpointing"] is True
