"""The family as the registry sees it, the import-light plugin, checkpoint keys, layouts."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch


def family() -> Any:
    from diffsynth_core.plugins import get_plugin_manager

    return get_plugin_manager().get_family("qwen-image-controlnet")


def test_family_extends_qwen_image() -> None:
    from diffsynth_core.plugins import get_plugin_manager

    f, base = family(), get_plugin_manager().get_family("qwen-image")
    assert f.base_family == "qwen-image" and f.distribution == "diffsynth-controlnet"
    assert set(base.model_files) < set(f.model_files)
    assert f.model_files["controlnet"].model_id == "InstantX/Qwen-Image-ControlNet-Union"
    assert f.defaults.data_file_keys == ("image", "control_image")
    assert f.defaults.required_columns == ("image", "prompt", "control_image")
    assert f.defaults.remove_prefix_in_ckpt == "pipe.controlnet."
    generate = {o.name for o in f.options_for("generate")}
    train = {o.name for o in f.options_for("train")}
    assert {
        "controlnet",
        "control_image",
        "control_mask",
        "controlnet_scale",
        "control_start",
        "control_end",
    } <= generate
    assert {"controlnet", "controlnet_layers"} <= train and "controlnet_layers" not in generate


def test_training_defaults_to_the_whole_controlnet() -> None:
    from diffsynth_core.cli.run.config import resolve

    full = resolve({"dataset": "d"}, {}, family())
    assert full.trainable_models == "controlnet" and full.lora_base_model is None
    for base in ("controlnet", "dit"):
        lora = resolve({"dataset": "d", "lora_base_model": base}, {}, family())
        assert lora.lora_base_model == base and lora.trainable_models is None
        assert lora.lora_target_modules  # the family's targets serve both models


def test_plugin_module_is_import_light() -> None:
    code = "import sys, diffsynth_controlnet.plugin; print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("fmt", "kind", "keys", "expected"),
    [
        ("diffusers", "lora", ["a.lora_A.weight"], ["controlnet.a.lora_A.weight"]),
        ("diffusers", "lora", ["pipe.dit.a.lora_A.weight"], ["transformer.a.lora_A.weight"]),
        (
            "comfyui",
            "lora",
            ["pipe.dit.a.lora_A.weight", "b.lora_A.weight"],
            ["diffusion_model.a.lora_A.weight", "controlnet.b.lora_A.weight"],
        ),
        ("peft", "lora", ["a.lora_A.weight"], ["a.lora_A.weight"]),
        ("diffusers", "full", ["img_in.weight"], ["img_in.weight"]),
        ("comfyui", "full", ["pipe.dit.img_in.weight"], ["img_in.weight"]),
        ("diffusers", "full", ["pipe.dit.x", "y"], ["transformer.x", "controlnet.y"]),
    ],
)
def test_checkpoint_keys_go_where_their_loader_looks(
    fmt: str, kind: str, keys: list[str], expected: list[str]
) -> None:
    from diffsynth_core.plugins import get_plugin_manager

    converted = get_plugin_manager().convert_state_dict(dict.fromkeys(keys, 0), fmt, family(), kind)
    assert sorted(converted) == sorted(expected)


def test_other_families_keep_the_core_conversion() -> None:
    from diffsynth_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    qwen = manager.get_family("qwen-image")
    assert list(manager.convert_state_dict({"a.lora_A.weight": 0}, "diffusers", qwen, "lora")) == [
        "transformer.a.lora_A.weight"
    ]


def test_infer_config_reads_a_controlnet_off_its_weights(tiny_pipe) -> None:  # noqa: ANN001
    from diffsynth_controlnet.models import infer_config, new_controlnet

    net = new_controlnet(tiny_pipe.dit, 1, inpaint=True)
    inferred = infer_config(net.state_dict(), tiny_pipe.dit.config)
    assert inferred == {k: net.config[k] for k in inferred}
    assert inferred["extra_condition_channels"] == 4 and inferred["num_layers"] == 1


def test_controlnet_folders_flat_or_nested_and_errors(tiny_dir, tmp_path) -> None:  # noqa: ANN001
    from diffsynth_controlnet.models import controlnet_folder, load_controlnet
    from diffsynth_core.errors import ModelFileError

    assert controlnet_folder(tiny_dir) == tiny_dir / "controlnet"  # a diffusers-saved pipeline
    assert controlnet_folder(tiny_dir / "controlnet") == tiny_dir / "controlnet"  # flat (InstantX)
    with pytest.raises(ModelFileError, match="holds no ControlNet"):
        controlnet_folder(tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_controlnet(tmp_path / "missing", None, torch.float32)
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelFileError):
        load_controlnet(tmp_path / "pickled", None, torch.float32)


def test_a_lora_file_is_not_a_controlnet(tmp_path, tiny_pipe) -> None:  # noqa: ANN001
    from safetensors.torch import save_file

    from diffsynth_controlnet.models import load_controlnet
    from diffsynth_core.errors import ModelFileError

    save_file({"controlnet.a.lora_A.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelFileError, match="LoRA"):
        load_controlnet(tmp_path / "lora.safetensors", tiny_pipe.dit, torch.float32)


@pytest.mark.slow
def test_family_conformance(tmp_path) -> None:  # noqa: ANN001
    from diffsynth_core.testing import check_family_conformance

    check_family_conformance("qwen-image-controlnet", workdir=tmp_path)
