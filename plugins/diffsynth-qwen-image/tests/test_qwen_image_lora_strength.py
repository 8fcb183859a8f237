"""LoRA strength survives the file: trained at rank 4, alpha 8 (scale 2), every export format
merged into the base, by our reader, by ``--lora-checkpoint`` and by diffusers'
``load_lora_weights``, gives the trained model's output (see ``diffsynth_core.testing.
lora_strength``); so do files that carry alpha as a tensor (kohya) or as metadata (diffusers'
``save_lora_weights``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffsynth_core.testing.lora_strength import (
    assert_same_effect,
    export_formats,
    latest_trainable,
    layer_outputs,
    lora_layers,
    rebuild_trained,
    train_with_cli,
)
from diffsynth_qwen_image.family import LORA_TARGETS

DATA = Path(__file__).resolve().parents[3] / "examples" / "qwen_image" / "data"
RANK, ALPHA = 4, 8.0
FORMATS = ("diffusers", "comfyui", "peft")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``diffsynth train`` run at rank 4, alpha 8 (the default format, diffusers)."""
    args = [
        "train", "--model", "qwen-image", "--model-path", tiny_dir, "--dataset", DATA,
        "--height", 64, "--width", 64, "--max-steps", 1, "--lora-rank", RANK,
        "--lora-alpha", ALPHA, "--learning-rate", "1e-2",
    ]  # fmt: skip
    return train_with_cli(args, tmp_path_factory.mktemp("strength") / "run")


@pytest.fixture(scope="module")
def trained(
    run: Path, fresh_pipe: Callable[[], Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The trained DiT rebuilt from the raw training state, its layers' outputs, the base
    outputs, and the LoRA exported in every format by the CLI's own writer."""
    pristine = fresh_pipe()
    pipe = copy.deepcopy(pristine)
    dit = rebuild_trained(pipe, "dit", LORA_TARGETS, RANK, ALPHA, latest_trainable(run))
    names = lora_layers(dit)
    return {
        "pipe": pipe, "names": names, "outputs": layer_outputs(dit, names),
        "base": layer_outputs(pristine.dit, names), "pristine": pristine,
        "files": export_formats(pipe, tmp_path_factory.mktemp("formats"), FORMATS),
    }  # fmt: skip


def test_the_cli_file_is_the_writers(run: Path, trained: dict[str, Any]) -> None:
    cli_file, ours = load_file(run / "final.safetensors"), load_file(trained["files"]["diffusers"])
    assert cli_file.keys() == ours.keys() and all(torch.equal(cli_file[k], ours[k]) for k in ours)
    from safetensors import safe_open

    with safe_open(str(run / "final.safetensors"), "pt") as handle:
        meta = handle.metadata()
    # the targets as trained (to_out.0, img_mod.1), not their last name parts (0, 1), and
    # the modules they adapted by their real names
    assert json.loads(meta["diffsynth.lora_target_modules"]) == sorted(LORA_TARGETS.split(","))
    assert json.loads(meta["diffsynth.target_modules"]) == sorted(
        name for name, m in trained["pipe"].dit.named_modules() if hasattr(m, "lora_A")
    )
    assert (meta["diffsynth.lora_rank"], meta["diffsynth.lora_alpha"]) == ("4", "8.0")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_merges_at_the_trained_strength(
    trained: dict[str, Any], fresh_pipe: Callable[[], Any], fmt: str
) -> None:
    from diffsynth_core.lora.inject import merge_lora, read_lora_file
    from diffsynth_core.training.module import switch_pipe_to_training_mode

    path, names = trained["files"][fmt], trained["names"]
    want, base = trained["outputs"], trained["base"]
    pipe = copy.deepcopy(trained["pristine"])
    merge_lora(pipe.dit, read_lora_file(path, pipe.dit, family=pipe.family))
    assert_same_effect(layer_outputs(pipe.dit, names), want, base, f"{fmt} file, our reader")
    again = copy.deepcopy(trained["pristine"])
    switch_pipe_to_training_mode(
        again, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=RANK,
        lora_checkpoint=str(path), lora_alpha=ALPHA,
    )  # fmt: skip
    assert_same_effect(
        layer_outputs(again.dit, names), want, base, f"{fmt} file, --lora-checkpoint"
    )


def _diffusers_outputs(tiny_dir: Path, path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

    dpipe = DiffusersQwenImagePipeline.from_pretrained(str(tiny_dir))
    dpipe.load_lora_weights(str(path))
    return layer_outputs(dpipe.transformer, names)


@pytest.mark.parametrize("fmt", ["diffusers", "comfyui"])  # peft: diffusers ignores it
def test_diffusers_loads_every_prefixed_format_at_the_trained_strength(
    trained: dict[str, Any], tiny_dir: Path, fmt: str
) -> None:
    got = _diffusers_outputs(tiny_dir, trained["files"][fmt], trained["names"])
    assert_same_effect(got, trained["outputs"], trained["base"], f"{fmt} file in diffusers")


def _raw_lora(pipe: Any) -> dict[str, torch.Tensor]:
    """The trained A and B as peft holds them: B not scaled by alpha / rank."""
    return {
        n.replace(".default.", "."): p.detach().clone()
        for n, p in pipe.dit.named_parameters()
        if ".lora_A." in n or ".lora_B." in n
    }


def test_alpha_as_a_tensor_or_as_metadata(
    trained: dict[str, Any], fresh_pipe: Callable[[], Any], tiny_dir: Path, tmp_path: Path
) -> None:
    from diffusers import QwenImagePipeline as DiffusersQwenImagePipeline

    from diffsynth_core.lora.inject import merge_lora, read_lora_file

    raw = _raw_lora(trained["pipe"])
    kohya = {}
    for key, value in raw.items():
        module, _, kind = key.rpartition(".lora_")
        flat = "lora_unet_" + module.replace(".", "_")
        kohya[f"{flat}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        kohya[f"{flat}.alpha"] = torch.tensor(ALPHA)
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    # what diffusers' own training scripts write: B unscaled, alpha in the metadata
    DiffusersQwenImagePipeline.save_lora_weights(
        tmp_path / "diffusers", transformer_lora_layers=raw,
        transformer_lora_adapter_metadata={"r": RANK, "lora_alpha": ALPHA, "target_modules": LORA_TARGETS.split(",")},
    )  # fmt: skip
    metadata_file = next((tmp_path / "diffusers").glob("*.safetensors"))
    names, want, base = trained["names"], trained["outputs"], trained["base"]
    for path in (tmp_path / "kohya.safetensors", metadata_file):
        pipe = copy.deepcopy(trained["pristine"])
        merge_lora(pipe.dit, read_lora_file(path, pipe.dit, family=pipe.family))
        assert_same_effect(layer_outputs(pipe.dit, names), want, base, f"{path.name}, our reader")
    got = _diffusers_outputs(tiny_dir, metadata_file, names)
    assert_same_effect(got, want, base, "diffusers' own file in diffusers")
