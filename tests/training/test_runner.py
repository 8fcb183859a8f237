"""launch_training_task on the toy family: learning, exact resume, NaN, batching, bad data, cache."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from diffsynth_core.errors import BadSampleError, ConfigError, NonFiniteLossError
from diffsynth_core.training.losses import FlowMatchSFTLoss

from .conftest import fixed_loss, lora_weights, toy_dataset, toy_module, train

pytestmark = pytest.mark.usefixtures("toy_manager")


def _eval_loss(module: Any, dataset: Any) -> float:
    """fixed_loss over the dataset, without gradients: comparable before and after training."""
    with torch.no_grad():
        return sum(float(module(dataset[i])) for i in range(len(dataset.rows))) / len(dataset.rows)


def test_loss_falls_when_overfitting_one_image(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=1, repeat=40)
    module = toy_module(tiny_toy, fixed_loss)
    before = _eval_loss(module, dataset)
    result = train(module, dataset, tmp_path / "out", learning_rate=5e-3)
    after = _eval_loss(module, dataset)
    assert result.steps == 40
    assert after < 0.8 * before, (before, after)


class SigtermAt:
    """The SFT loss, sending SIGTERM to this process at its ``at``-th call (a scheduler's kill)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, pipe: Any, **inputs: Any) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return FlowMatchSFTLoss(pipe, **inputs)


RESUME_OPTIONS = dict(
    num_epochs=3,
    batch_size=2,
    gradient_accumulation_steps=2,
    lr_scheduler="cosine",
    warmup_steps=2,
    max_grad_norm=1.0,
    seed=3,
)


def test_sigterm_then_resume_ends_exactly_like_an_unbroken_run(
    tiny_toy: Path, tmp_path: Path
) -> None:
    dataset = toy_dataset(
        tmp_path / "data", n=4, repeat=2
    )  # 8 samples: 2 steps per epoch, 6 in all
    unbroken = toy_module(tiny_toy)
    full = train(unbroken, dataset, tmp_path / "unbroken", **RESUME_OPTIONS)
    assert full.steps == 6 and full.interrupted is None

    stopped = train(toy_module(tiny_toy, SigtermAt(5)), dataset, tmp_path / "run", **RESUME_OPTIONS)
    assert stopped.interrupted == "SIGTERM"
    assert stopped.steps == 3  # the step in progress (micro-batches 5 and 6) was finished first
    assert stopped.state == tmp_path / "run" / "state" / "step-000003"
    position = json.loads((stopped.state / "trainer_state.json").read_text())["position"]
    assert position == {"epoch": 1, "batch": 2, "step": 3}

    resumed_module = toy_module(tiny_toy, seed=99)  # another LoRA init: the state must overwrite it
    resumed = train(resumed_module, dataset, tmp_path / "run", resume="latest", **RESUME_OPTIONS)
    assert resumed.steps == 6
    expected, got = lora_weights(unbroken), lora_weights(resumed_module)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert not all(
        torch.equal(expected[k], lora_weights(toy_module(tiny_toy))[k]) for k in expected
    )
    rows = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_stop_by_max_steps_then_resume_with_more_steps(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=4)
    unbroken = toy_module(tiny_toy)
    train(unbroken, dataset, tmp_path / "unbroken", max_steps=6, num_epochs=2)
    train(toy_module(tiny_toy), dataset, tmp_path / "run", max_steps=3)
    module = toy_module(tiny_toy)
    result = train(module, dataset, tmp_path / "run", max_steps=6, resume="latest")
    assert result.steps == 6
    assert all(
        torch.equal(a, b)
        for a, b in zip(lora_weights(unbroken).values(), lora_weights(module).values(), strict=True)
    )


def test_nan_loss_stops_with_last_good_state_and_no_nan_file(
    tiny_toy: Path, tmp_path: Path
) -> None:
    calls = []

    def nan_at_third(pipe: Any, **inputs: Any) -> torch.Tensor:
        calls.append(1)
        loss = FlowMatchSFTLoss(pipe, **inputs)
        return loss * float("nan") if len(calls) == 3 else loss

    module = toy_module(tiny_toy, nan_at_third)
    with pytest.raises(
        NonFiniteLossError, match=r"loss became nan after step 2 .* --resume latest"
    ):
        train(module, toy_dataset(tmp_path / "data"), tmp_path / "out", save_every_n_steps=1)
    states = sorted(p.name for p in (tmp_path / "out" / "state").iterdir())
    assert states == ["step-000002"]
    files = list((tmp_path / "out").rglob("*.safetensors"))
    assert files and all(torch.isfinite(t).all() for f in files for t in load_file(str(f)).values())
    assert all(torch.isfinite(p).all() for p in lora_weights(module).values())


def _one_step(tiny: Path, dataset: Any, out: Path, **options: Any) -> dict[str, torch.Tensor]:
    module = toy_module(tiny, fixed_loss)
    before = lora_weights(module)
    train(
        module, dataset, out, learning_rate=0.5, optimizer="torch.optim.SGD", max_steps=1, **options
    )
    return {k: v - before[k] for k, v in lora_weights(module).items()}


def test_batch_2_equals_batch_1_with_2_accumulation_steps(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=2)
    batched = _one_step(tiny_toy, dataset, tmp_path / "a", batch_size=2)
    accumulated = _one_step(tiny_toy, dataset, tmp_path / "b", gradient_accumulation_steps=2)
    single = _one_step(tiny_toy, dataset, tmp_path / "c")
    assert any(d.abs().max() > 1e-4 for d in batched.values())
    assert all(torch.allclose(batched[k], accumulated[k], atol=1e-6, rtol=1e-4) for k in batched)
    assert not all(torch.allclose(batched[k], single[k], atol=1e-6, rtol=1e-4) for k in batched)


def test_clipping_bounds_the_update(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=1)
    free = _one_step(tiny_toy, dataset, tmp_path / "free")
    clipped = _one_step(tiny_toy, dataset, tmp_path / "clipped", max_grad_norm=1e-3)
    norm = lambda d: torch.cat([v.flatten() for v in d.values()]).norm()  # noqa: E731
    assert norm(free) > 0.01
    assert norm(clipped) == pytest.approx(0.5 * 1e-3, rel=1e-3)  # lr x the clipped norm
    logged = (tmp_path / "clipped" / "logs" / "metrics.csv").read_text().splitlines()[1].split(",")
    assert float(logged[4]) == pytest.approx(
        float(norm(free)) / 0.5, rel=1e-3
    )  # the norm before clipping


def test_bad_images_are_skipped_counted_and_logged(tiny_toy: Path, tmp_path: Path) -> None:
    dataset = toy_dataset(tmp_path / "data", n=4, repeat=2)
    (tmp_path / "data" / "image_1.png").write_bytes(b"not a png at all")
    result = train(
        toy_module(tiny_toy), dataset, tmp_path / "out", num_workers=2
    )  # records cross processes
    assert result.steps == 8 and result.bad_samples == 2
    lines = (tmp_path / "out" / "bad_samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["row"] == 1 for line in lines)
    assert any("2 bad sample(s) skipped from 1 row(s)" in note for note in result.notes)


def test_bad_image_with_error_policy_stops_with_context_and_keeps_the_steps_done(
    tiny_toy: Path, tmp_path: Path
) -> None:
    from diffsynth_core.data import BucketBatchSampler

    dataset = toy_dataset(tmp_path / "data", n=4)
    (tmp_path / "data" / "image_1.png").write_bytes(b"")
    order = BucketBatchSampler([(0, 0)] * 4, 1, seed=0).batches(0)  # the run's own batch order
    steps_before = order.index([1])
    with pytest.raises(BadSampleError, match="image_1.png"):
        train(toy_module(tiny_toy), dataset, tmp_path / "out", on_bad_sample="error")
    states = [p.name for p in (tmp_path / "out" / "state").glob("step-*")]
    assert states == ([f"step-{steps_before:06d}"] if steps_before else [])


def test_feature_cache_is_exact_and_skips_the_frozen_encoders(
    tiny_toy: Path, tmp_path: Path
) -> None:
    dataset = toy_dataset(tmp_path / "data", n=2)
    results = {}
    for cached in (False, True):
        module = toy_module(tiny_toy)
        calls: list[int] = []
        module.pipe.text_encoder.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        train(module, dataset, tmp_path / f"out-{cached}", num_epochs=3, cache_features=cached)
        results[cached] = (lora_weights(module), len(calls))
    (plain, plain_calls), (cached, cached_calls) = results[False], results[True]
    assert plain_calls == 6 and cached_calls == 2
    assert all(torch.equal(plain[k], cached[k]) for k in plain)


def test_unknown_option_and_cache_with_batches_are_config_errors(
    tiny_toy: Path, tmp_path: Path
) -> None:
    dataset = toy_dataset(tmp_path / "data", n=2)
    with pytest.raises(ConfigError, match="unknown option.*bogus"):
        train(toy_module(tiny_toy), dataset, tmp_path / "out", bogus=1)
    with pytest.raises(ConfigError, match="--batch-size 1"):
        train(toy_module(tiny_toy), dataset, tmp_path / "out", cache_features=True, batch_size=2)
