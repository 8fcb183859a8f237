"""End to end: ``diffsynth train --model flux-dev --preset tiny`` on the bundled data writes a
LoRA that diffusers' FluxPipeline loads with ``load_lora_weights``, with the effect that
merging the file into the transformer by hand has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "examples" / "flux" / "data"
BIN = Path(sys.executable).parent
GEN = dict(height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="latent")

pytestmark = pytest.mark.slow


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSYNTH_DEBUG": "1", **env}
    done = subprocess.run(args, capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _preset_cache(tiny_dir: Path, root: Path) -> Path:
    """The cache ``--preset tiny`` reads, filled with this session's build (building it again
    in the subprocess would only repeat what the fixture did)."""
    from diffsynth_core.plugins import get_plugin_manager

    family = get_plugin_manager().get_family("flux-dev")
    folder = root / "tiny" / f"{family.name}-{family.version or '0'}"
    shutil.copytree(tiny_dir, folder)
    (folder / ".complete").touch()
    return root


def _latents(pipe: Any) -> torch.Tensor:
    return pipe(
        "a red circle in the center", generator=torch.Generator().manual_seed(0), **GEN
    ).images


def test_train_cli_lora_loads_in_diffusers_as_a_hand_merge(
    tiny_dirs: dict[str, Path], load_diffusers: Callable[[Path], Any], tmp_path: Path
) -> None:
    from diffsynth_core.lora.inject import merge_lora, normalize_lora_state_dict

    cache = _preset_cache(tiny_dirs["flux-dev"], tmp_path / "cache")
    out = tmp_path / "run"
    _run([
        str(BIN / "diffsynth"), "train", "--model", "flux-dev", "--preset", "tiny",
        "--dataset", str(DATA), "--height", "64", "--width", "64", "--max-steps", "4",
        "--lora-rank", "4", "--learning-rate", "1e-2", "--max-sequence-length", "64",
        "--output", str(out),
    ], DIFFSYNTH_CACHE=str(cache))  # fmt: skip
    lora = load_file(str(out / "final.safetensors"))
    # 2 double blocks x 12 layers, 1 single block x 5 (q, k, v, proj_mlp, proj_out), proj_out
    assert len(lora) == (2 * 12 + 5 + 1) * 2 and all(k.startswith("transformer.") for k in lora)
    assert all(v.abs().max() > 0 for k, v in lora.items() if ".lora_B." in k)  # it trained

    dpipe = load_diffusers(tiny_dirs["flux-dev"])
    base = _latents(dpipe)
    dpipe.load_lora_weights(str(out / "final.safetensors"))
    loaded = _latents(dpipe)
    by_hand = load_diffusers(tiny_dirs["flux-dev"])
    merge_lora(by_hand.transformer, normalize_lora_state_dict(lora))
    merged = _latents(by_hand)
    effect, gap = (loaded - base).abs().max().item(), (loaded - merged).abs().max().item()
    print(f"diffusers load_lora_weights: effect {effect:.3e}, off the hand merge by {gap:.2e}")
    assert effect > 1e-2 and gap < 1e-4
