"""LoRA strength survives the file for a ControlNet LoRA: trained by the CLI at rank 4, alpha 8
(``--lora-base-model controlnet``), every export format merged into the ControlNet by our
reader, by ``--lora-checkpoint`` and by diffusers' ``load_lora_adapter`` gives the trained
layers' output (see ``diffsynth_core.testing.lora_strength``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

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

DATA = Path(__file__).resolve().parents[3] / "examples" / "qwen_image_controlnet" / "data"
RANK, ALPHA = 4, 8.0
FORMATS = ("diffusers", "comfyui", "peft")
# the prefix each format gives a ControlNet LoRA (diffsynth_controlnet.family.LORA_LAYOUT)
DIFFUSERS_PREFIX = {"diffusers": "controlnet", "comfyui": "controlnet", "peft": None}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """Tiny models run fastest on one thread, above all on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(
    one_thread: None, tiny_dir: Path, load_pipe: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    args = [
        "train", "--model", "qwen-image-controlnet", "--model-path", tiny_dir, "--dataset", DATA,
        "--lora-base-model", "controlnet", "--height", 64, "--width", 64, "--max-steps", 1,
        "--lora-rank", RANK, "--lora-alpha", ALPHA, "--learning-rate", "1e-2",
    ]  # fmt: skip
    run = train_with_cli(args, tmp_path_factory.mktemp("strength") / "run")
    pristine = load_pipe()
    pipe = copy.deepcopy(pristine)
    net = rebuild_trained(pipe, "controlnet", LORA_TARGETS, RANK, ALPHA, latest_trainable(run))
    names = lora_layers(net)
    return {
        "names": names, "outputs": layer_outputs(net, names),
        "base": layer_outputs(pristine.controlnet, names), "pristine": pristine,
        "files": export_formats(pipe, tmp_path_factory.mktemp("formats"), FORMATS, "pipe.controlnet."),
    }  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_at_the_trained_strength(
    trained: dict[str, Any], tiny_dir: Path, load_pipe: Any, fmt: str
) -> None:
    from diffusers import QwenImageControlNetModel

    from diffsynth_core.lora.inject import merge_lora, read_lora_file
    from diffsynth_core.training.module import switch_pipe_to_training_mode

    path, names = trained["files"][fmt], trained["names"]
    want, base = trained["outputs"], trained["base"]
    pipe = copy.deepcopy(trained["pristine"])
    merge_lora(pipe.controlnet, read_lora_file(path, pipe.controlnet, family=pipe.family))
    assert_same_effect(layer_outputs(pipe.controlnet, names), want, base, f"{fmt}, our reader")
    again = copy.deepcopy(trained["pristine"])
    switch_pipe_to_training_mode(
        again, lora_base_model="controlnet", lora_target_modules=LORA_TARGETS, lora_rank=RANK,
        lora_checkpoint=str(path), lora_alpha=ALPHA,
    )  # fmt: skip
    got = layer_outputs(again.controlnet, names)
    assert_same_effect(got, want, base, f"{fmt}, --lora-checkpoint")
    theirs = QwenImageControlNetModel.from_pretrained(str(tiny_dir / "controlnet"))
    theirs.load_lora_adapter(str(path), prefix=DIFFUSERS_PREFIX[fmt])
    assert_same_effect(layer_outputs(theirs, names), want, base, f"{fmt}, diffusers")
