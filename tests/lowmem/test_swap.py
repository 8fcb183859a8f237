"""Block swap (diffsynth_core.training.swap) on a small model of LoRA'd blocks, on the CPU.

The "device" is the CPU here, and the device copies are real copies: these tests see which
blocks are resident at each moment, the copy schedule, what autograd keeps, and that swap
changes no bit of the losses or the trained weights.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from diffsynth_core import BasePipeline, ModelFamily
from diffsynth_core.errors import ConfigError
from diffsynth_core.lora.inject import inject_lora
from diffsynth_core.training.swap import BlockSwap, install_block_swap, spread

DIM = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices: a second thread only adds overhead (and contention on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.norm = nn.LayerNorm(DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class Net(nn.Module):
    """Blocks run in ``order`` (Wan VACE runs its second list first); ``checkpointing``
    recomputes each block in backward (non-reentrant, as diffusers does)."""

    def __init__(self, blocks: int = 6, order: list[int] | None = None) -> None:
        super().__init__()
        self.proj_in, self.proj_out = nn.Linear(4, DIM), nn.Linear(DIM, 4)
        self.blocks = nn.ModuleList(Block() for _ in range(blocks))
        self.run_order = order or list(range(blocks))
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)
        for index in self.run_order:
            block = self.blocks[index]
            if self.checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        return self.proj_out(h)


def _pipe(order: list[int] | None = None, seed: int = 0, blocks: int = 6) -> BasePipeline:
    torch.manual_seed(seed)
    pipe = BasePipeline()
    pipe.dit = Net(blocks, order)
    pipe.family = ModelFamily(name="net", description="net", blocks={"dit": ("blocks",)})
    pipe.requires_grad_(False)
    inject_lora(pipe.dit, "fc1,fc2", 4, None, dtype=torch.float32)
    for name, p in pipe.dit.named_parameters():
        if "lora_B" in name:  # not zero, so every LoRA weight gets a gradient from step 1
            p.data.normal_(0, 0.1)
    return pipe


def _batches(steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(3, 5, 4, generator=generator) for _ in range(steps)]


def _train(pipe: BasePipeline, steps: int = 3, checkpointing: bool = False) -> tuple[list[float], Any]:
    pipe.dit.checkpointing = checkpointing
    params = [p for p in pipe.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for x in _batches(steps):
        loss = pipe.dit(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, optimizer


def _lora(pipe: BasePipeline) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in pipe.named_parameters() if p.requires_grad}


def _swapped(order: list[int] | None = None, count: int = 3) -> tuple[BasePipeline, BlockSwap]:
    pipe = _pipe(order)
    swap = install_block_swap(pipe, "dit", count, "cpu")
    swap.trace = []
    return pipe, swap


def test_spread_puts_resident_blocks_between_swapped_ones() -> None:
    assert spread(60, 30) == list(range(1, 60, 2))
    assert spread(6, 6) == list(range(6))
    assert spread(6, 1) == [5]
    assert spread(40, 0) == []


@pytest.mark.parametrize("checkpointing", [False, True], ids=["eager", "checkpointing"])
@pytest.mark.parametrize("order", [None, [4, 5, 0, 1, 2, 3]], ids=["list-order", "vace-order"])
@pytest.mark.parametrize("count", [1, 3, 6])
def test_swap_changes_no_bit_of_losses_or_weights(checkpointing: bool, order: list[int] | None, count: int) -> None:
    plain = _pipe(order)
    expected, _ = _train(plain, 4, checkpointing)
    pipe, swap = _swapped(order, count)
    losses, _ = _train(pipe, 4, checkpointing)
    assert losses == expected  # bitwise
    trained, reference = _lora(pipe), _lora(plain)
    assert trained.keys() == reference.keys()
    assert all(torch.equal(trained[k], reference[k]) for k in trained)
    assert any(w == "use" and phase == "backward" for w, _, phase in swap.trace or [])


def test_frozen_weights_leave_the_parameters_and_lora_stays() -> None:
    pipe = _pipe()
    before = {n: p.detach().clone() for n, p in pipe.dit.named_parameters()}
    swap = install_block_swap(pipe, "dit", 2, "cpu")
    assert swap.swapped == [2, 5]
    names = {n for n, _ in pipe.dit.named_parameters()}
    for index in (2, 5):
        for part in ("fc1.base_layer.weight", "fc2.base_layer.bias", "norm.weight"):
            assert f"blocks.{index}.{part}" not in names
        assert f"blocks.{index}.fc1.lora_A.default.weight" in names  # trained: stays put
    assert "blocks.1.fc1.base_layer.weight" in names  # a resident block is untouched
    masters = [m for ms in swap.masters.values() for m in ms]
    pipe.to("cpu")  # what accelerate's prepare does: the masters are no parameters to move
    assert all(a is b for a, b in zip(masters, [m for ms in swap.masters.values() for m in ms], strict=True))
    assert swap.bytes_per_block() == {2: 2 * (DIM * DIM + DIM) * 4 + 2 * DIM * 4, 5: 2 * (DIM * DIM + DIM) * 4 + 2 * DIM * 4}
    swap.uninstall()
    after = dict(pipe.dit.named_parameters())
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not after["blocks.2.fc1.base_layer.weight"].requires_grad


def _residency(pipe: BasePipeline, swap: BlockSwap) -> list[tuple[int, set[int]]]:
    """(block, swapped blocks resident) each time a block runs, forward and recomputation."""
    seen: list[tuple[int, set[int]]] = []
    for index, block in enumerate(pipe.dit.blocks):
        block.register_forward_pre_hook(lambda m, a, i=index: seen.append((i, swap.resident())))
    return seen


@pytest.mark.parametrize("checkpointing", [False, True], ids=["eager", "checkpointing"])
def test_a_swapped_block_is_resident_when_it_runs_and_at_most_two_are(checkpointing: bool) -> None:
    pipe, swap = _swapped([4, 5, 0, 1, 2, 3], count=4)
    seen = _residency(pipe, swap)  # registered after swap's hooks: sees the block loaded
    _train(pipe, 3, checkpointing)
    assert swap.swapped == [1, 2, 3, 5]
    assert len(seen) == 3 * 6 * (2 if checkpointing else 1)
    for index, resident in seen:
        assert len(resident) <= 2
        if index in swap.swapped:
            assert index in resident
    replayed: set[int] = set()
    for what, index, _ in swap.trace or []:
        replayed |= {index} if what == "load" else set()
        replayed -= {index} if what == "release" else set()
        assert len(replayed) <= 2


def _sync_loads(trace: list[tuple[str, int, str]]) -> list[tuple[int, str]]:
    """Uses whose block was not loaded ahead: the copy had nothing to overlap with."""
    return [
        (index, phase)
        for (what, index, phase), (after, later, _) in zip(trace, trace[1:], strict=False)
        if what == "use" and after == "load" and later == index
    ]


@pytest.mark.parametrize("checkpointing", [False, True], ids=["eager", "checkpointing"])
def test_prefetch_follows_the_observed_order_of_use(checkpointing: bool) -> None:
    pipe, swap = _swapped([4, 5, 0, 1, 2, 3], count=4)
    _train(pipe, 1, checkpointing)
    assert swap.swapped == [1, 2, 3, 5]
    assert swap.order == [5, 1, 2, 3]  # as used, not as listed
    swap.trace = []
    _train(pipe, 2, checkpointing)
    assert _sync_loads(swap.trace) == []  # every block was on its way before it was needed
    forward = [i for what, i, phase in swap.trace if what == "use" and phase == "forward"]
    backward = [i for what, i, phase in swap.trace if what == "use" and phase == "backward"]
    assert forward == [5, 1, 2, 3] * 2
    assert backward == [3, 2, 1, 5] * 2


def test_list_order_guess_only_costs_the_first_step() -> None:
    pipe, swap = _swapped([4, 5, 0, 1, 2, 3], count=4)
    _train(pipe, 1)
    assert _sync_loads(swap.trace or []) != []  # the first forward guessed the listed order


def test_autograd_keeps_handles_not_device_copies() -> None:
    """Without checkpointing, the graph must not hold every swapped block's copy until
    backward (that would keep them all on the GPU); the saved-tensor hook keeps handles."""
    pipe, swap = _swapped(count=6)
    copies: list[weakref.ref[torch.Tensor]] = []
    for index, block in enumerate(pipe.dit.blocks):
        block.register_forward_pre_hook(
            lambda m, a, i=index: copies.extend(weakref.ref(c) for c in swap.loaded[i].copies)
        )
    loss = pipe.dit(_batches(1)[0]).pow(2).mean()
    gc.collect()
    alive = {c()._diffsynth_swap[0] for c in copies if c() is not None}
    assert alive == swap.resident() == {5}  # the last block: backward's first
    loss.backward()
    assert all(p.grad is not None for p in pipe.parameters() if p.requires_grad)


def test_after_a_step_everything_is_consistent() -> None:
    pipe = _pipe()
    originals = {n: p.detach().clone() for n, p in pipe.dit.named_parameters()}
    swap = install_block_swap(pipe, "dit", 3, "cpu")
    masters = {i: [m.clone() for m in ms] for i, ms in swap.masters.items()}
    _, optimizer = _train(pipe, 2, checkpointing=True)
    lora = [p for p in pipe.parameters() if p.requires_grad]
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(in_optimizer) == len(lora) and all(a is b for a, b in zip(in_optimizer, lora, strict=True))
    assert all(p.grad is None and p.device.type == "cpu" for p in lora)
    assert all(len(optimizer.state[p]) == 3 for p in lora)  # AdamW's step, exp_avg, exp_avg_sq
    for index, ms in swap.masters.items():  # frozen: the masters never change
        assert all(torch.equal(a, b) for a, b in zip(ms, masters[index], strict=True))
    assert swap.resident() <= {swap.order[0]}  # only the next forward's first block
    for index, slots in swap.slots.items():
        resident = index in swap.resident()
        for (module, name), master in zip(slots, swap.masters[index], strict=True):
            assert (getattr(module, name) is master) != resident
    swap.uninstall()
    frozen = {n: p for n, p in pipe.dit.named_parameters() if not p.requires_grad}
    assert all(torch.equal(frozen[n], originals[n]) for n in frozen)
    assert frozen.keys() == {n for n in originals if "lora_" not in n}


def test_inference_releases_every_block() -> None:
    plain, (pipe, swap) = _pipe(), _swapped(count=6)
    x = _batches(1)[0]
    with torch.no_grad():
        assert torch.equal(pipe.dit(x), plain.dit(x))
    assert swap.resident() == set()


def test_bad_requests_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"--blocks-to-swap 7: 'dit' of 'net' has 6 blocks; give at most 6"):
        install_block_swap(_pipe(), "dit", 7, "cpu")
    pipe = _pipe()
    pipe.family = ModelFamily(name="bare", description="no blocks")
    with pytest.raises(ConfigError, match=r"--blocks-to-swap needs the transformer blocks of 'dit'.*'bare'"):
        install_block_swap(pipe, "dit", 1, "cpu")
    pipe = _pipe()
    pipe.dit.blocks[5].norm.requires_grad_(True)  # full training of a block
    with pytest.raises(ConfigError, match="fully trained weights"):
        install_block_swap(pipe, "dit", 1, "cpu")
    assert "blocks.5.fc1.base_layer.weight" in dict(pipe.dit.named_parameters())  # untouched
