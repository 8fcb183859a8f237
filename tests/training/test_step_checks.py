"""The NaN guard without a host read per step (step_checks.py): a bad step found on the device
freezes the weights, the host finds it at the next read and saves the step before it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from diffsynth_core.errors import NonFiniteLossError
from diffsynth_core.training import step_checks
from diffsynth_core.training.losses import FlowMatchSFTLoss

from .conftest import lora_weights, toy_dataset, toy_module, train

pytestmark = pytest.mark.usefixtures("toy_manager")


class BadAt:
    """The SFT loss, made bad at its ``at``-th call: NaN, or (``grad``) a finite loss whose
    gradient is not (sqrt's infinite slope at 0)."""

    def __init__(self, at: int, grad: bool = False) -> None:
        self.at, self.grad, self.calls = at, grad, 0

    def __call__(self, pipe: Any, **inputs: Any) -> torch.Tensor:
        self.calls += 1
        loss = FlowMatchSFTLoss(pipe, **inputs)
        if self.calls != self.at:
            return loss
        if not self.grad:
            return loss * float("nan")
        return loss + torch.sqrt(loss - loss.detach())  # the value + 0, an infinite gradient


OPTIONS = dict(max_steps=6, seed=5, lr_scheduler="cosine", warmup_steps=1)


def _rows(out: Path) -> list[str]:
    return [r.split(",")[0] for r in (out / "logs" / "metrics.csv").read_text().splitlines()[1:]]


def test_a_nan_between_host_reads_saves_the_step_before_it(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=8)
    two = toy_module(tiny_toy)
    train(two, dataset, tmp_path / "two", max_steps=2, **{k: v for k, v in OPTIONS.items() if k != "max_steps"})

    module = toy_module(tiny_toy, BadAt(3))
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan after step 2 .*step-000002"):
        train(module, dataset, tmp_path / "run", log_every=10, **OPTIONS)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "state").iterdir()) == ["step-000002"]
    assert _rows(run) == ["1", "2"]  # the steps after the bad one are not logged
    # steps 3 to 6 ran on the device, but none of them changed the weights
    expected, got = lora_weights(two), lora_weights(module)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    saved = load_file(str(run / "state" / "step-000002" / "trainable.safetensors"))
    assert saved.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
    moments = torch.load(run / "state" / "step-000002" / "optimizer.pt", weights_only=True)
    assert {float(s["step"]) for s in moments["state"].values()} == {2.0}
    position = json.loads((run / "state" / "step-000002" / "trainer_state.json").read_text())
    assert position["position"]["step"] == 2


def test_resuming_after_a_caught_nan_ends_like_an_unbroken_run(tiny_toy: Path, tmp_path: Path) -> None:
    """The saved state holds the RNG states of step 2's end, not of the later steps run
    before the host read: the resumed run draws the unbroken run's noise."""
    dataset = toy_dataset(tmp_path / "data", n=8)
    unbroken = toy_module(tiny_toy)
    train(unbroken, dataset, tmp_path / "unbroken", log_every=10, **OPTIONS)
    with pytest.raises(NonFiniteLossError):
        train(toy_module(tiny_toy, BadAt(3)), dataset, tmp_path / "run", log_every=10, **OPTIONS)
    resumed = toy_module(tiny_toy, seed=99)
    result = train(resumed, dataset, tmp_path / "run", resume="latest", log_every=10, **OPTIONS)
    assert result.steps == 6
    expected, got = lora_weights(unbroken), lora_weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _rows(tmp_path / "run") == ["1", "2", "3", "4", "5", "6"]


def test_a_nan_gradient_with_a_finite_loss_is_caught_too(tiny_toy: Path, tmp_path: Path) -> None:
    module = toy_module(tiny_toy, BadAt(4, grad=True))
    with pytest.raises(NonFiniteLossError, match=r"the gradient norm became (nan|inf) after step 3"):
        train(module, toy_dataset(tmp_path / "data", n=8), tmp_path / "run", log_every=10, **OPTIONS)
    assert sorted(p.name for p in (tmp_path / "run" / "state").iterdir()) == ["step-000003"]
    assert all(torch.isfinite(w).all() for w in lora_weights(module).values())


def test_the_ema_skips_the_bad_steps_as_the_optimizer_does(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=8)
    options = {k: v for k, v in OPTIONS.items() if k != "max_steps"}
    train(toy_module(tiny_toy), dataset, tmp_path / "two", max_steps=2, ema_decay=0.5, **options)
    with pytest.raises(NonFiniteLossError):
        train(toy_module(tiny_toy, BadAt(3)), dataset, tmp_path / "run", ema_decay=0.5,
              max_steps=6, **options)  # fmt: skip
    expected = load_file(str(tmp_path / "two" / "state" / "step-000002" / "ema.safetensors"))
    got = load_file(str(tmp_path / "run" / "state" / "step-000002" / "ema.safetensors"))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_the_host_reads_the_losses_once_per_window(
    tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real = step_checks._to_host
    monkeypatch.setattr(step_checks, "_to_host", lambda window: reads.append(len(window)) or real(window))
    dataset = toy_dataset(tmp_path / "data", n=8)
    train(toy_module(tiny_toy), dataset, tmp_path / "a", log_every=4, max_steps=8)
    assert reads == [4, 4]  # two reads of four steps each, none per step
    reads.clear()
    train(toy_module(tiny_toy), dataset, tmp_path / "b", log_every=3, max_steps=8, save_every_n_steps=4)
    assert reads == [3, 1, 2, 2]  # read at 3, before the save at 4, at 6, and at the end
    assert _rows(tmp_path / "b") == [str(s) for s in range(1, 9)]


def test_no_tensor_is_read_by_the_host_between_reads(
    tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a tensor reaches the host (item, float, bool, tolist) is counted over runs of
    4 and 12 steps read once at the end: the 8 more steps add no read of the runner's."""
    counted = {"n": 0}
    for name in ("item", "__float__", "__bool__", "tolist", "__int__"):
        real = getattr(torch.Tensor, name)

        def spy(self: torch.Tensor, *a: Any, _real: Any = real, **k: Any) -> Any:
            counted["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    dataset = toy_dataset(tmp_path / "data", n=12)

    def reads(steps: int) -> int:
        counted["n"] = 0
        train(toy_module(tiny_toy), dataset, tmp_path / f"r{steps}", log_every=100, max_steps=steps)
        return counted["n"]

    short, long = reads(4), reads(12)
    family = _family_reads_per_step(tiny_toy, dataset, counted)
    assert long - short == 8 * family, (short, long, family)


def _family_reads_per_step(tiny: Path, dataset: Any, counted: dict[str, int]) -> int:
    """The host reads of one forward and backward of the toy family alone (its own, e.g.
    the timestep's index into the schedule), which the runner cannot avoid."""
    module = toy_module(tiny)
    counted["n"] = 0
    module(dataset[0]).backward()
    return counted["n"]


def test_other_optimizers_are_checked_on_the_host_every_step(tiny_toy: Path, tmp_path: Path) -> None:
    module = toy_module(tiny_toy, BadAt(3))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan after step 2"):
        train(module, toy_dataset(tmp_path / "data", n=8), tmp_path / "run",
              optimizer="torch.optim.SGD", log_every=10, **OPTIONS)  # fmt: skip
    assert _rows(tmp_path / "run") == ["1", "2"]


def test_which_optimizers_skip_on_the_device() -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    params = [torch.nn.Parameter(torch.ones(2))]
    assert step_checks.skips_on_device(torch.optim.AdamW(params, fused=True), accelerator)
    assert not step_checks.skips_on_device(torch.optim.AdamW(params), accelerator)
    assert not step_checks.skips_on_device(torch.optim.SGD(params, lr=0.1), accelerator)
