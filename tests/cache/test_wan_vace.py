"""Split training of Wan VACE (tiny preset, CPU, fp32): the VAE and UMT5 are never built."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import EXAMPLES, NeverBuilt, copy_rows, invoke, lora, losses, ok, same_weights

pytestmark = pytest.mark.slow


def test_wan_vace_trains_from_its_cache_with_the_same_losses(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import UMT5EncoderModel

    data = copy_rows(EXAMPLES / "wan_vace" / "data", tmp_path / "data", 2)
    common = ["--model", "wan-vace", "--preset", "tiny", "--dataset", data, "--height", "32",
              "--width", "32", "--num-frames", "5"]  # fmt: skip
    train = ["--max-steps", "3", "--lora-rank", "4", "--learning-rate", "1e-2"]
    plan = ok(invoke("train", *common, "--explain-cache"))
    assert "WanVaceNoise  (not cacheable)" in plan.output
    assert "models not loaded when training with --cache: vae, text_encoder" in plan.output
    dit = NeverBuilt(monkeypatch, WanVACETransformer3DModel)
    built = ok(invoke("cache", *common, "--output", tmp_path / "cache", "--no-progress"))
    assert dit.built == [] and "note:" not in built.output  # the cache needs no DiT
    monkeypatch.undo()
    ok(invoke("train", *common, *train, "--output", tmp_path / "plain"))
    guard = NeverBuilt(monkeypatch, AutoencoderKLWan, UMT5EncoderModel)
    ok(
        invoke(
            "train", *common, *train, "--cache", tmp_path / "cache", "--output", tmp_path / "cached"
        )
    )
    assert guard.built == []
    assert (
        losses(tmp_path / "cached") == losses(tmp_path / "plain")
        and len(losses(tmp_path / "plain")) == 3
    )
    assert same_weights(lora(tmp_path / "cached"), lora(tmp_path / "plain"))
