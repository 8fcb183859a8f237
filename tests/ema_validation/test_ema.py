"""``--ema-decay``: the EMA file is the moving average of the trained weights step by step, the
samples are made with it, and a resumed run's EMA equals the unbroken run's bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from training.conftest import lora_weights, toy_dataset, toy_module, train

from diffsynth_core.lora.files import bare_key
from diffsynth_core.training.ema import EmaWeights
from diffsynth_core.training.sampling import SampleRenderer

pytestmark = pytest.mark.usefixtures("toy_manager")
DECAY = 0.6


def _state(out: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / "state" / f"step-{step:06d}" / name))


def test_ema_is_the_moving_average_of_every_step(tiny_toy: Path, tmp_path: Path) -> None:
    module = toy_module(tiny_toy)
    start = lora_weights(module)
    out = tmp_path / "out"
    train(module, toy_dataset(tmp_path / "data"), out, max_steps=4, ema_decay=DECAY,
          save_every_n_steps=1, keep_last=10)  # fmt: skip
    want = {n: t.float() for n, t in start.items()}
    for step in range(1, 5):  # by hand: ema = d * ema + (1 - d) * w after each step
        weights = _state(out, step, "trainable.safetensors")
        want = {n: DECAY * e + (1 - DECAY) * weights[n] for n, e in want.items()}
        saved = _state(out, step, "ema.safetensors")
        for name, value in want.items():
            torch.testing.assert_close(saved[name], value, rtol=1e-6, atol=1e-7)
    last = _state(out, 4, "trainable.safetensors")
    assert max((want[n] - last[n]).abs().max() for n in last) > 1e-4  # not the last weights
    # beside each checkpoint, in its format (toy: alpha = rank, nothing to fold)
    ema_file = load_file(str(out / "final-ema.safetensors"))
    expected = {"transformer." + bare_key(n.removeprefix("pipe.dit.")): v for n, v in want.items()}
    assert set(ema_file) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(ema_file[key], value, rtol=1e-6, atol=1e-7)
    assert (out / "step-000002-ema.safetensors").is_file()
    assert "ema" not in (out / "checkpoints.json").read_text()  # not listed: pruned with its own


def test_a_resumed_run_has_the_unbroken_runs_ema_bitwise(tiny_toy: Path, tmp_path: Path) -> None:
    data = toy_dataset(tmp_path / "data")
    train(toy_module(tiny_toy), data, tmp_path / "a", max_steps=4, ema_decay=DECAY)
    train(toy_module(tiny_toy), data, tmp_path / "b", max_steps=2, ema_decay=DECAY)
    train(toy_module(tiny_toy), data, tmp_path / "b", max_steps=4, ema_decay=DECAY,
          resume="latest", save_every_n_steps=1, keep_last=1)  # fmt: skip
    for name in ("final-ema.safetensors", "final.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(
        _state(tmp_path / "a", 4, "ema.safetensors")["pipe.dit.transformer_blocks.0.to_q.lora_A.default.weight"],
        _state(tmp_path / "b", 4, "ema.safetensors")["pipe.dit.transformer_blocks.0.to_q.lora_A.default.weight"],
    )
    # keep_last 1: the older step checkpoint went, and its EMA file with it
    assert (tmp_path / "b" / "step-000004-ema.safetensors").is_file()
    assert not (tmp_path / "b" / "step-000003-ema.safetensors").exists()


def test_samples_are_made_with_the_ema_weights(
    tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def render(self: Any, pipe: Any, step: int, index: int, prompt: Any) -> tuple[Path, Any]:
        seen[step] = {f"pipe.dit.{n}": p.detach().clone() for n, p in pipe.dit.named_parameters() if p.requires_grad}
        return tmp_path / "unused.png", None  # (the file, what the pipeline returned)

    monkeypatch.setattr(SampleRenderer, "_one", render)
    module = toy_module(tiny_toy)
    out = tmp_path / "out"
    train(module, toy_dataset(tmp_path / "data"), out, max_steps=4, ema_decay=DECAY,
          sample_prompts=["a red square"], sample_every=2)  # fmt: skip
    assert sorted(seen) == [0, 2, 4]
    ema, trained = _state(out, 4, "ema.safetensors"), _state(out, 4, "trainable.safetensors")
    assert all(torch.equal(seen[4][n], ema[n]) for n in ema)
    assert any(not torch.equal(ema[n], trained[n]) for n in ema)
    # and training went on with (and ended with) the trained weights, not the average
    assert all(torch.equal(v, trained[n]) for n, v in lora_weights(module).items())


def test_swapped_in_puts_the_trained_weights_back_bitwise() -> None:
    layer = torch.nn.Linear(4, 3).to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    ema = EmaWeights(layer, 0.9)
    ema.shadow = {n: t + 0.123 for n, t in ema.shadow.items()}
    with ema.swapped_in():
        assert not torch.equal(layer.weight, before["weight"])
    assert all(torch.equal(p, before[n]) for n, p in layer.named_parameters())
