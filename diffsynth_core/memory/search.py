"""The cheapest settings whose estimate fits a memory budget (``--gpu-memory``).

"Cheapest" orders what each memory setting costs the run, from free to dear: the disk cache
(one pass over the data before training; no cost per step), gradient checkpointing (a
second forward of each block in backward, ~30% slower), an fp8 then an int8 base (weights
rounded to 8 bits, dequantized per layer), offloading the checkpointed activations (copies
to the CPU), and block swap (a copy of every swapped block in forward and in backward,
dearer the more blocks are swapped). The user's resolution, rank, batch and optimizer are
never changed: the search answers "how do I run *this* training in my GPU".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .estimate import Estimate, Estimator, MemorySettings

# cost of each setting, in the order above (a sum decides; swap adds per block)
COST = {"cache": 1.0, "gradient_checkpointing": 2.0, "fp8": 3.0, "int8": 3.5, "offload": 4.0}
# swap: a fixed 5 plus up to 20 more as the swapped share of the blocks grows (copies over
# PCIe bound the step), so an 8-bit base is tried before swapping many blocks
SWAP_COST, SWAP_COST_ALL_BLOCKS = 5.0, 20.0


@dataclass(frozen=True)
class Fit:
    """The cheapest settings found that fit, their estimate and their cost."""

    estimate: Estimate
    cost: float


def cost(s: MemorySettings, base: MemorySettings, blocks: int) -> float:
    """What ``s`` costs the run beyond the user's own settings ``base`` (0: nothing)."""
    total = 0.0
    if s.cache and not base.cache:
        total += COST["cache"]
    if s.gradient_checkpointing and not base.gradient_checkpointing:
        total += COST["gradient_checkpointing"]
    if s.base_precision != "bf16" and s.base_precision != base.base_precision:
        total += COST[s.base_precision]
    if s.gradient_checkpointing_offload and not base.gradient_checkpointing_offload:
        total += COST["offload"]
    if s.blocks_to_swap > base.blocks_to_swap:
        total += SWAP_COST + SWAP_COST_ALL_BLOCKS * s.blocks_to_swap / blocks
    return total


def candidates(base: MemorySettings, num_blocks: int) -> Iterator[MemorySettings]:
    """Every combination the search weighs; swap is searched separately (see :func:`cheapest_fit`).
    Settings the user already turned on stay on (they asked for them)."""
    checkpointing = [base.gradient_checkpointing] if base.gradient_checkpointing else [False, True]
    for cache in sorted({base.cache, True}):
        for ckpt in checkpointing:
            for offload in sorted({base.gradient_checkpointing_offload, ckpt}) if ckpt else [False]:
                for precision in sorted({base.base_precision, "fp8", "int8"}):
                    yield base.but(cache=cache, gradient_checkpointing=ckpt,
                                   gradient_checkpointing_offload=offload, base_precision=precision,
                                   blocks_to_swap=base.blocks_to_swap)  # fmt: skip


def cheapest_fit(estimator: Estimator, base: MemorySettings, budget: int) -> Fit | None:
    """The cheapest settings (by :func:`cost`) whose estimate is at most ``budget`` bytes;
    None when nothing fits (not even int8 with every block but the last swapped)."""
    best: Fit | None = None
    blocks = estimator.spec.num_blocks
    for s in candidates(base, blocks):
        fit = _fewest_swapped(estimator, s, base, budget, blocks)
        if fit is not None and (
            best is None or (fit.cost, fit.estimate.peak) < (best.cost, best.estimate.peak)
        ):
            best = fit
    return best


def _fewest_swapped(
    estimator: Estimator, s: MemorySettings, base: MemorySettings, budget: int, blocks: int
) -> Fit | None:
    """``s`` with the fewest swapped blocks that fits (swap lowers the peak monotonically,
    so a bisection finds it), or None."""
    estimate = estimator.estimate(s)
    if estimate.peak <= budget:
        return Fit(estimate, cost(s, base, blocks))
    most = s.but(blocks_to_swap=blocks - 1)
    if estimator.estimate(most).peak > budget:
        return None
    low, high = s.blocks_to_swap, blocks - 1  # low does not fit, high does
    while high - low > 1:
        middle = (low + high) // 2
        if estimator.estimate(s.but(blocks_to_swap=middle)).peak <= budget:
            high = middle
        else:
            low = middle
    chosen = s.but(blocks_to_swap=high)
    return Fit(estimator.estimate(chosen), cost(chosen, base, blocks))
