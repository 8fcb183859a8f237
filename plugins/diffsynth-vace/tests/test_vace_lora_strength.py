"""LoRA strength survives the file for Wan VACE: trained by the CLI at rank 4, alpha 8, every
export format merged into the DiT by our reader and by ``--lora-checkpoint``, and the formats
diffusers reads in full by diffusers' ``load_lora_adapter``, gives the trained layers' output
(see ``diffsynth_core.testing.lora_strength``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from vace_helpers import EXAMPLE_DATA

from diffsynth_core.testing.lora_strength import (
    assert_same_effect,
    export_formats,
    latest_trainable,
    layer_outputs,
    lora_layers,
    rebuild_trained,
    train_with_cli,
)
from diffsynth_vace.family import LORA_TARGETS

RANK, ALPHA = 4, 8.0
FORMATS = ("diffusers", "comfyui", "wan", "peft")
# diffusers' Wan converter knows the main blocks only: it reads comfyui / wan files in part
DIFFUSERS_PREFIX = {"diffusers": "transformer", "peft": None}
pytestmark = pytest.mark.slow


def _load(tiny_dir: Path) -> Any:
    from diffsynth_core.pipeline import load_pipeline

    return load_pipeline("wan-vace", model_path=str(tiny_dir))


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_the_module() -> Any:
    """The module fixture trains before the function-scoped one_thread applies."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(
    one_thread_for_the_module: None, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    args = [
        "train", "--model", "wan-vace", "--model-path", tiny_dir, "--dataset", EXAMPLE_DATA,
        "--num-frames", 5, "--height", 32, "--width", 32, "--max-steps", 1,
        "--lora-rank", RANK, "--lora-alpha", ALPHA, "--learning-rate", "2e-2",
    ]  # fmt: skip
    run = train_with_cli(args, tmp_path_factory.mktemp("strength") / "run")
    pristine = _load(tiny_dir)
    pipe = copy.deepcopy(pristine)
    dit = rebuild_trained(pipe, "dit", LORA_TARGETS, RANK, ALPHA, latest_trainable(run))
    names = lora_layers(dit)
    assert any(n.startswith("vace_blocks.") for n in names)
    return {
        "names": names, "outputs": layer_outputs(dit, names),
        "base": layer_outputs(pristine.dit, names), "pristine": pristine,
        "files": export_formats(pipe, tmp_path_factory.mktemp("formats"), FORMATS),
    }  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_at_the_trained_strength(
    trained: dict[str, Any], tiny_dir: Path, fmt: str
) -> None:
    from diffsynth_core.lora.inject import merge_lora, read_lora_file
    from diffsynth_core.training.module import switch_pipe_to_training_mode

    path, names = trained["files"][fmt], trained["names"]
    want, base = trained["outputs"], trained["base"]
    pipe = copy.deepcopy(trained["pristine"])
    merge_lora(pipe.dit, read_lora_file(path, pipe.dit, family=pipe.family))
    assert_same_effect(layer_outputs(pipe.dit, names), want, base, f"{fmt}, our reader")
    again = copy.deepcopy(trained["pristine"])
    switch_pipe_to_training_mode(
        again, lora_base_model="dit", lora_target_modules=LORA_TARGETS, lora_rank=RANK,
        lora_checkpoint=str(path), lora_alpha=ALPHA,
    )  # fmt: skip
    assert_same_effect(layer_outputs(again.dit, names), want, base, f"{fmt}, --lora-checkpoint")


@pytest.mark.parametrize("fmt", sorted(DIFFUSERS_PREFIX))
def test_diffusers_at_the_trained_strength(
    trained: dict[str, Any], tiny_dir: Path, fmt: str
) -> None:
    from diffusers import WanVACETransformer3DModel

    theirs = WanVACETransformer3DModel.from_pretrained(str(tiny_dir / "transformer"))
    theirs.load_lora_adapter(str(trained["files"][fmt]), prefix=DIFFUSERS_PREFIX[fmt])
    got = layer_outputs(theirs, trained["names"])
    assert_same_effect(got, trained["outputs"], trained["base"], f"{fmt}, diffusers")
