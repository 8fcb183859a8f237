"""``diffsynth train`` with LoKr in ComfyUI's layout: the file's metadata carries the SAI model
spec keys (what ComfyUI's and the hubs' loaders show), the ``--metadata-*`` texts, the
training settings, and the real names of the modules the file adapts."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from diffsynth_core.testing.lora_strength import train_with_cli

DATA = Path(__file__).resolve().parents[2] / "examples" / "qwen_image" / "data"

pytestmark = pytest.mark.slow


def test_lokr_run_writes_comfyui_keys_and_modelspec_metadata(qwen_tiny: Path, tmp_path: Path) -> None:
    args = [
        "train", "--model", "qwen-image", "--model-path", qwen_tiny, "--dataset", DATA,
        "--height", 32, "--width", 48, "--max-steps", 2, "--lora-rank", 2, "--lora-type", "lokr",
        "--lora-format", "comfyui", "--metadata-title", "Star LoKr", "--metadata-author", "me",
        "--metadata-description", "stars, tiny", "--learning-rate", "1e-2",
    ]  # fmt: skip
    run = train_with_cli(args, tmp_path / "run")
    with safe_open(str(run / "final.safetensors"), "pt") as handle:
        meta, keys = handle.metadata(), list(handle.keys())
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "qwen-image/lokr"
    assert meta["modelspec.implementation"] == "https://github.com/comfyanonymous/ComfyUI"
    assert (meta["modelspec.title"], meta["modelspec.author"]) == ("Star LoKr", "me")
    assert meta["modelspec.description"] == "stars, tiny"
    assert meta["modelspec.resolution"] == "48x32"  # width x height
    written = datetime.datetime.fromisoformat(meta["modelspec.date"].replace("Z", "+00:00"))
    assert abs(datetime.datetime.now(datetime.timezone.utc) - written).total_seconds() < 600
    config = json.loads(meta["diffsynth.training_args"])["config"]
    assert (config["lora_type"], config["lora_rank"], config["lora_format"]) == ("lokr", 2, "comfyui")
    assert meta["diffsynth.lora_type"] == "lokr"

    # the real names: every adapted module of the file, by its name in the model, and no other
    modules = {k.removeprefix("diffusion_model.").rsplit(".", 1)[0] for k in keys}
    assert all(k.startswith("diffusion_model.transformer_blocks.") for k in keys)
    assert sorted(modules) == json.loads(meta["diffsynth.target_modules"])
    assert len(modules) == 12 * 2  # the family's 12 targets in 2 blocks
