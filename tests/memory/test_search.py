"""The cheapest settings that fit a budget, and the budget's spelling."""

from __future__ import annotations

import pytest

from diffsynth_core.errors import ConfigError
from diffsynth_core.memory.budget import parse_budget
from diffsynth_core.memory.estimate import Estimator, MemorySettings
from diffsynth_core.memory.search import cheapest_fit, cost


def test_the_cheapest_fit_is_under_the_budget_and_nothing_cheaper_fits(
    estimator: Estimator, lora: MemorySettings
) -> None:
    base = lora.but(cache=False)
    full = estimator.estimate(base).peak
    smallest = estimator.estimate(
        base.but(
            cache=True, base_precision="int8", gradient_checkpointing_offload=True, blocks_to_swap=3
        )
    ).peak
    for budget in (full - 1, (full + smallest) // 2, smallest + 1):
        fit = cheapest_fit(estimator, base, budget)
        assert fit is not None
        settings = fit.estimate.settings
        assert estimator.estimate(settings).peak == fit.estimate.peak <= budget
        # no setting by itself cheaper than the chosen ones fits
        for cheaper in (base, base.but(cache=True), base.but(cache=True, base_precision="fp8")):
            if cost(cheaper, base, 4) < fit.cost:
                assert estimator.estimate(cheaper).peak > budget
    assert (
        cheapest_fit(estimator, base, full) is not None
        and cheapest_fit(estimator, base, full).cost == 0
    )
    assert cheapest_fit(estimator, base, smallest - 1) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("24GiB", 24 * 2**30),
        ("16 GB", 16 * 10**9),
        ("80000MiB", 80000 * 2**20),
        ("1.5gib", int(1.5 * 2**30)),
    ],
)
def test_budget_spellings(text: str, size: int) -> None:
    assert parse_budget(text) == size


@pytest.mark.parametrize("text", ["24", "lots", "24GiBs", "-3GiB", "0GiB", ""])
def test_bad_budgets_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--gpu-memory"):
        parse_budget(text)
