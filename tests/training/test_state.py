"""Training states: atomic folders, what --resume accepts, RNG round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsynth_core.errors import ResumeError
from diffsynth_core.training.state import TrainingPosition, TrainingStates, capture_rng, restore_rng

from .conftest import lora_weights, toy_dataset, toy_module, train

pytestmark = pytest.mark.usefixtures("toy_manager")


def test_rng_round_trip() -> None:
    state = capture_rng()
    first = (random.random(), float(np.random.rand()), torch.rand(3))
    restore_rng(state)
    assert (
        first[0] == random.random()
        and first[1] == float(np.random.rand())
        and torch.equal(first[2], torch.rand(3))
    )


def test_a_kill_during_a_state_save_keeps_the_previous_state_latest(
    tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = toy_dataset(tmp_path / "data", n=2)
    train(toy_module(tiny_toy), dataset, tmp_path / "out", max_steps=2, keep_last=3)
    states = TrainingStates(tmp_path / "out" / "state", {})
    assert [p.name for p in states.all()] == ["step-000002"]

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed while writing optimizer.pt")

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train(
            toy_module(tiny_toy),
            dataset,
            tmp_path / "out",
            max_steps=4,
            resume="latest",
            keep_last=3,
        )
    monkeypatch.undo()
    assert states.find("latest").name == "step-000002"  # the half-written one is not a state
    assert list((tmp_path / "out" / "state").glob(".tmp-*"))  # ... but is left on disk,
    module = toy_module(tiny_toy)
    result = train(module, dataset, tmp_path / "out", max_steps=4, resume="latest", keep_last=3)
    assert result.steps == 4
    assert not list((tmp_path / "out" / "state").glob(".tmp-*"))  # ... and cleaned by the next run
    assert [p.name for p in states.all()] == ["step-000002", "step-000004"]  # epoch ends
    assert all(torch.isfinite(v).all() for v in lora_weights(module).values())


def test_resume_refuses_a_changed_data_layout_and_a_wrong_path(
    tiny_toy: Path, tmp_path: Path
) -> None:
    dataset = toy_dataset(tmp_path / "data", n=4)
    train(toy_module(tiny_toy), dataset, tmp_path / "out", max_steps=1)
    with pytest.raises(ResumeError, match=r"batch_size 1 -> 2"):
        train(toy_module(tiny_toy), dataset, tmp_path / "out", batch_size=2, resume="latest")
    with pytest.raises(ResumeError, match="no trainer_state.json"):
        train(toy_module(tiny_toy), dataset, tmp_path / "out", resume=str(tmp_path))


def test_resume_latest_without_a_state_starts_fresh(tiny_toy: Path, tmp_path: Path) -> None:
    result = train(
        toy_module(tiny_toy), toy_dataset(tmp_path / "data", n=2), tmp_path / "out", resume="latest"
    )
    assert result.steps == 2


def test_position_moves() -> None:
    position = TrainingPosition().after_step(batch=2).after_step(batch=4).next_epoch()
    assert position == TrainingPosition(epoch=1, batch=0, step=2)
