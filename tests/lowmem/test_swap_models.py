"""Block swap on the tiny Qwen-Image, Wan VACE and FLUX.1: bitwise the same training.

Each family trains a LoRA for a few steps through PipelineTrainingModule and the SFT loss,
with and without gradient checkpointing, once with all its blocks resident and once with
blocks swapped (on the CPU the "device" copies are real copies). The losses and the trained
LoRA weights must be equal to the last bit, and the swap must have done its work.

Both runs first copy every weight into memory of its own: the tiny weights load as views into
one buffer, 8 bytes from a 64-byte boundary, while a device copy is a fresh allocation, and
the CPU's matrix kernels round differently by alignment (the unswapped model alone, copied or
not, differs in the last bits of its gradients). On a GPU every weight is a fresh allocation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

STEPS = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """family name -> its tiny preset on disk (built on first use)."""
    from diffsynth_core.plugins import get_plugin_manager

    built: dict[str, Path] = {}

    def folder(name: str) -> Path:
        family = get_plugin_manager().families.get(name)
        if family is None:
            pytest.skip(f"the {name} plugin is not installed")
        if name not in built:
            built[name] = tmp_path_factory.mktemp(name)
            family.build_tiny(built[name])
        return built[name]

    return folder


def _data(name: str) -> dict[str, Any]:
    if name == "wan-vace":
        frames = [Image.new("RGB", (32, 32), (200, 30, 30 + 40 * i)) for i in range(5)]
        return {"video": frames, "prompt": "a red video"}
    return {"image": Image.new("RGB", (32, 32), (200, 30, 30)), "prompt": "a red picture"}


def _train(name: str, folder: Path, swap: int, checkpointing: bool) -> tuple[list[float], dict[str, torch.Tensor], Any]:
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_core.training.swap import install_block_swap

    manager = get_plugin_manager()
    targets = manager.get_family(name).defaults.lora_target_modules
    torch.manual_seed(0)
    pipe = load_pipeline(name, model_path=str(folder))
    for param in pipe.parameters():  # every weight in an allocation of its own (docstring)
        param.data = param.data.clone()
    switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules=targets, lora_rank=4)
    block_swap = install_block_swap(pipe, "dit", swap, "cpu") if swap else None
    if block_swap is not None:
        block_swap.trace = []
    module = PipelineTrainingModule(pipe, manager.get_loss("sft"), {"use_gradient_checkpointing": checkpointing})
    optimizer = torch.optim.AdamW(module.trainable_modules(), lr=1e-3)
    losses = []
    for _ in range(STEPS):
        loss = module(_data(name))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    return losses, lora, block_swap


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "checkpointing"),
    [("qwen-image", False), ("qwen-image", True), ("wan-vace", False), ("wan-vace", True), ("flux-dev", True)],
)
def test_swap_trains_bitwise_as_without(name: str, checkpointing: bool, tiny: Any) -> None:
    from diffsynth_core.blocks import repeated_blocks
    from diffsynth_core.pipeline import load_pipeline

    folder = tiny(name)
    total = len(repeated_blocks(load_pipeline(name, model_path=str(folder)), "dit", "test"))
    count = max(1, total - 1)  # resident and swapped blocks side by side
    expected, expected_lora, _ = _train(name, folder, 0, checkpointing)
    losses, lora, swap = _train(name, folder, count, checkpointing)
    print(f"{name} checkpointing={checkpointing}: {count} of {total} blocks swapped, losses {losses}")
    assert losses == expected  # to the last bit
    assert lora.keys() == expected_lora.keys()
    assert all(torch.equal(lora[k], expected_lora[k]) for k in lora)
    uses = [(i, phase) for what, i, phase in swap.trace if what == "use"]
    assert {i for i, _ in uses} == set(swap.swapped)  # every swapped block came and went
    assert {phase for _, phase in uses} == {"forward", "backward"}
    if name == "wan-vace":  # tiny: 4 main blocks, then 2 VACE blocks, which run first
        assert swap.order == [4, 5, *(i for i in swap.swapped if i < 4)]
