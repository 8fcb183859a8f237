"""Tests that kill mutants of ``tests/mutation/mutants.py`` the rest of the suite let survive.

Each test names the mutant that showed it was missing; every one checks an effect a user
relies on (a durable checkpoint, a stopped run, a file never written, a sample never mixed up).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from diffsynth_core import hookimpl
from diffsynth_core.errors import NonFiniteLossError, UnknownLossError
from diffsynth_core.pipeline import PipelineUnit
from diffsynth_core.plugins import PluginManager
from diffsynth_core.training.atomic import TMP_PREFIX

from .conftest import lora_weights, toy_dataset, toy_module, train


class FakeAccelerator:
    """Single process: what ModelLogger.save needs from accelerate."""

    is_main_process = True

    def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass


# -- atomic writes (mutant atomic-rename-before-fsync) -----------------------------------------


def test_atomic_write_fsyncs_the_data_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsynth_core.training import atomic

    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = atomic.fsync_path, os.replace

    def fsync(path: Path) -> None:
        content = path.read_text() if path.is_file() else ""
        events.append(("fsync", path.name if path.is_file() else "<folder>", content))
        real_fsync(path)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(atomic, "fsync_path", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.atomic_write_text(tmp_path / "manifest.json", "complete")
    monkeypatch.undo()
    assert len(events) == 3, events
    (_, synced, content), (_, moved, target), folder = events
    assert events[0][0] == "fsync" and synced.startswith(TMP_PREFIX) and content == "complete"
    assert events[1][0] == "replace" and (moved, target) == (synced, "manifest.json")
    assert folder[:2] == ("fsync", "<folder>")  # the rename itself made durable, last
    assert (tmp_path / "manifest.json").read_text() == "complete"


# -- leftovers of a killed save (mutant clean-temporaries-wrong-pattern) ----------------------


@pytest.mark.usefixtures("toy_manager")
def test_what_a_killed_save_left_is_removed_when_the_run_resumes(
    tiny_toy: Path, tmp_path: Path
) -> None:
    dataset = toy_dataset(tmp_path / "data", n=2)
    out = tmp_path / "out"
    train(toy_module(tiny_toy), dataset, out, max_steps=1)
    (out / f"{TMP_PREFIX}0badc0de-step-000002.safetensors").write_bytes(b"\0" * 64)
    half_state = out / "state" / f"{TMP_PREFIX}step-000099"
    half_state.mkdir()
    (half_state / "optimizer.pt").write_bytes(b"\0" * 64)
    result = train(toy_module(tiny_toy), dataset, out, max_steps=2, resume="latest")
    assert result.steps == 2
    assert not list(out.glob(TMP_PREFIX + "*")) and not list((out / "state").glob(TMP_PREFIX + "*"))


# -- NaN guards (mutants nan-guard-skips-grad-norm, nan-check-on-save-misses-inf) -----------


@pytest.mark.usefixtures("toy_manager")
def test_a_nan_gradient_with_a_finite_loss_stops_before_the_weights_change(
    tiny_toy: Path, tmp_path: Path
) -> None:
    from diffsynth_core.training.losses import FlowMatchSFTLoss

    calls = []

    def nan_gradient_at_third(pipe: Any, **inputs: Any) -> torch.Tensor:
        calls.append(1)
        loss = FlowMatchSFTLoss(pipe, **inputs)
        if len(calls) == 3:  # sqrt'(0) * 0 = nan in every LoRA gradient; the value stays finite
            lora = sum(p.sum() for p in pipe.dit.parameters() if p.requires_grad)
            loss = loss + torch.sqrt(lora * 0)
        return loss

    module = toy_module(tiny_toy, nan_gradient_at_third)
    with pytest.raises(NonFiniteLossError, match=r"gradient norm became nan after step 2 "):
        train(module, toy_dataset(tmp_path / "data"), tmp_path / "out", save_every_n_steps=1)
    assert sorted(p.name for p in (tmp_path / "out" / "state").iterdir()) == ["step-000002"]
    assert all(torch.isfinite(p).all() for p in lora_weights(module).values())


def test_inf_weights_are_never_written(toy_manager: Any, tiny_toy: Path, tmp_path: Path) -> None:
    from diffsynth_core.training.logger import ModelLogger

    module = toy_module(tiny_toy)
    with torch.no_grad():
        next(p for n, p in module.named_parameters() if "lora_B" in n)[0, 0] = float("inf")
    logger = ModelLogger(tmp_path, "pipe.dit.", family=toy_manager.get_family("toy"))
    with pytest.raises(NonFiniteLossError, match="NaN/inf"):
        logger.save(FakeAccelerator(), module, "final", 1, 0)
    assert not list(tmp_path.glob("*.safetensors"))


# -- bad samples (mutant all-bad-batch-trains-at-full-weight) ----------------------------------


def test_a_batch_of_only_bad_samples_repeats_the_last_good_one_at_weight_zero(
    tmp_path: Path,
) -> None:
    from diffsynth_core.data import collate_samples
    from diffsynth_core.training.guards import BadBatches
    from diffsynth_core.training.state import TrainingPosition

    dataset = toy_dataset(tmp_path / "data", n=2)
    batches = BadBatches(tmp_path / "out", 0, dataset)
    good, weight = batches.usable(collate_samples([dataset[1]]), TrainingPosition())
    assert weight == 1.0 and good["prompt"] == dataset[1]["prompt"]
    record = {"index": 0, "row": 0, "column": "image", "path": "a.png", "kind": "missing",
              "reason": "file does not exist"}  # fmt: skip
    data, weight = batches.usable({"__bad__": [record]}, TrainingPosition(step=1))
    assert data is good and weight == 0.0  # in step with the other processes, but no update
    assert batches.log.count == 1


# -- the feature cache key (mutant cache-key-ignores-image-size) -------------------------------


class ImageUnit(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(input_params=("input_image",), output_params=("x",), cacheable=True)


def test_cache_key_tells_apart_images_with_the_same_pixels_in_another_shape() -> None:
    from diffsynth_core.training.cache import FeatureCache

    cache, unit = FeatureCache(), ImageUnit()
    wide, tall = Image.new("RGB", (64, 32), (9, 90, 200)), Image.new("RGB", (32, 64), (9, 90, 200))
    assert wide.tobytes() == tall.tobytes()

    def key(image: Image.Image) -> str | None:
        return cache.key(unit, object(), {"input_image": image}, {}, {})

    assert key(wide) == key(wide.copy()) and key(wide) is not None
    assert key(wide) != key(tall)  # else the wide image's latents would train the tall one


# -- plugin isolation (mutant broken-plugin-keeps-losses) ---------------------------------------


class LossThenTypo:
    @hookimpl
    def diffsynth_register_losses(self, register: Any) -> None:
        register("half", lambda pipe, **inputs: torch.zeros(()))
        raise RuntimeError("a typo after the first register call")


def test_a_plugin_that_fails_after_registering_a_loss_leaves_no_loss_behind() -> None:
    manager = PluginManager.with_plugins(LossThenTypo())
    assert "a typo after the first register call" in manager.plugins["LossThenTypo"].error
    with pytest.raises(UnknownLossError, match="no loss named 'half'"):
        manager.get_loss("half")
    assert manager.get_loss("sft") is not None


# -- resume (mutants resume-latest-picks-oldest, state-list-accepts-incomplete) ---------------


def test_resume_latest_is_the_newest_complete_state(tmp_path: Path) -> None:
    from diffsynth_core.training.state import STATE_FILE, TrainingStates

    root = tmp_path / "state"
    for step in (2, 10, 9):  # made out of order; 10 sorts before 9 as text
        (root / f"step-{step:06d}").mkdir(parents=True)
        (root / f"step-{step:06d}" / STATE_FILE).write_text("{}")
    (root / "step-000011").mkdir()  # no trainer_state.json: not a complete state
    (root / f"{TMP_PREFIX}step-000012").mkdir()  # a save in progress
    states = TrainingStates(root, {})
    assert [p.name for p in states.all()] == ["step-000002", "step-000009", "step-000010"]
    assert states.find("latest") == root / "step-000010"


# -- the batch plan (mutant epoch-keeps-partial-accumulation) ---------------------------------


@pytest.mark.usefixtures("toy_manager")
def test_an_epoch_ends_on_a_whole_optimizer_step(tiny_toy: Path, tmp_path: Path) -> None:
    import json

    # 3 samples, 2 micro-batches per step: each epoch is 1 step, its odd sample left out, so
    # no gradient of one epoch is carried into the next one's first step
    dataset = toy_dataset(tmp_path / "data", n=3)
    result = train(
        toy_module(tiny_toy), dataset, tmp_path / "out", num_epochs=2, gradient_accumulation_steps=2
    )
    assert (result.steps, result.epoch) == (2, 2)
    position = json.loads((result.state / "trainer_state.json").read_text())["position"]
    assert position == {"epoch": 2, "batch": 0, "step": 2}


# -- the feature cache (mutant cache-ignores-trainable-encoder) --------------------------------


class PromptUnit(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(
            input_params=("prompt",),
            output_params=("prompt_emb",),
            onload_model_names=("text_encoder",),
            cacheable=True,
        )


def test_a_unit_whose_model_is_being_trained_is_never_cached() -> None:
    from types import SimpleNamespace

    from diffsynth_core.training.cache import FeatureCache

    encoder = torch.nn.Linear(4, 4)
    pipe = SimpleNamespace(text_encoder=encoder)
    encoder.requires_grad_(False)
    assert FeatureCache().key(PromptUnit(), pipe, {"prompt": "a cat"}, {}, {}) is not None
    encoder.requires_grad_(True)  # e.g. --trainable-models text_encoder
    assert FeatureCache().key(PromptUnit(), pipe, {"prompt": "a cat"}, {}, {}) is None
