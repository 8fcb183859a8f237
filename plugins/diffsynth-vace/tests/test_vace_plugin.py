"""The plugin: registration, cheap import, loading paths, the tiny preset, core conformance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from vace_helpers import moving_square, random_clip

from diffsynth_core.plugins import get_plugin_manager


def test_import_is_cheap() -> None:
    code = "import sys, diffsynth_vace.plugin; print(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_families_registered_through_the_entry_point() -> None:
    manager = get_plugin_manager()
    assert manager.plugins["wan-vace"].error is None
    small, large = manager.get_family("wan-vace"), manager.get_family("wan-vace-14b")
    assert small.distribution == "diffsynth-vace"
    assert small.model_files["dit"].model_id == "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
    assert large.model_files["dit"].model_id == "Wan-AI/Wan2.1-VACE-14B-diffusers"
    assert {c: f.origin_file_pattern.split("/")[0] for c, f in small.model_files.items()} == {
        "dit": "transformer", "text_encoder": "text_encoder", "vae": "vae", "tokenizer": "tokenizer",
    }  # fmt: skip
    d = small.defaults
    assert (d.lora_base_model, d.lora_rank, d.num_frames, d.division_factor, d.export_prefix) == (
        "dit",
        32,
        81,
        16,
        "transformer",
    )
    assert d.data_file_keys == ("video", "vace_video", "vace_video_mask", "vace_reference_image")
    assert d.required_columns == ("video", "prompt")
    assert {o.flag for o in small.options_for("generate")} == {
        "--vace-video", "--vace-video-mask", "--vace-reference-image",
        "--num-frames", "--vace-scale", "--flow-shift",
    }  # fmt: skip
    assert small.options_for("train") == []  # --num-frames of train is the core's own flag


def test_other_families_are_not_loaded_here() -> None:
    """The VACE families name their own loader and layout; the plugin answers no loading or
    format hook, so it cannot load (or convert for) another family."""
    manager = get_plugin_manager()
    vace = [f for f in manager.families if f.plugin == "wan-vace"]
    assert {f.name for f in vace} == {"wan-vace", "wan-vace-14b"}
    assert {f.loader for f in vace} == {"diffsynth_vace.pipeline:WanVacePipeline.from_model_configs"}
    assert manager.plugins["wan-vace"].hooks == [
        "diffsynth_register_lora_formats", "diffsynth_register_models"
    ]  # fmt: skip


def test_tiny_build_is_reproducible(tiny_dir: Path, tmp_path: Path) -> None:
    from diffsynth_vace.tiny import build_tiny

    again = build_tiny(tmp_path / "again")
    files = sorted(p.relative_to(tiny_dir) for p in tiny_dir.rglob("*") if p.is_file())
    assert {"model_index.json", "transformer/config.json", "scheduler/scheduler_config.json"} <= {
        str(f) for f in files
    }
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((tiny_dir / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_seed_style_list_of_model_configs(tiny_dir: Path) -> None:
    from diffsynth_core.loading import ModelConfig
    from diffsynth_vace import WanVacePipeline

    configs = [
        ModelConfig(
            path=str(tiny_dir),
            origin_file_pattern="transformer/diffusion_pytorch_model*.safetensors",
        ),
        ModelConfig(path=str(tiny_dir), origin_file_pattern="text_encoder/model*.safetensors"),
        ModelConfig(
            path=str(tiny_dir), origin_file_pattern="vae/diffusion_pytorch_model*.safetensors"
        ),
        ModelConfig(path=str(tiny_dir), origin_file_pattern="tokenizer/"),
    ]
    pipe = WanVacePipeline.from_pretrained(model_configs=configs)
    assert pipe.scheduler_config["flow_shift"] == 3.0  # read from scheduler/ beside transformer/
    assert len(pipe.dit.vace_blocks) == 2


def test_shape_check_rounds_like_diffusers(pipe: Any) -> None:
    from diffsynth_vace.units import WanVaceShapeCheck

    out = WanVaceShapeCheck().process(pipe, height=60, width=70, num_frames=10)
    assert out == {"height": 64, "width": 80, "num_frames": 9}


def test_core_conformance(tmp_path: Path) -> None:
    """The core's checks for every family: training step, inference, LoRA export round trip.

    At 32x32 (inference makes the default 81 frames); the control path is tested elsewhere."""
    from diffsynth_core.testing import check_family_conformance

    data = {"prompt": "a white square moves right", "video": moving_square(5, 32)}
    report = check_family_conformance(
        "wan-vace", workdir=tmp_path, sample=data, height=32, width=32
    )
    assert "LoRA merge (diffusers)" in report.passed


@pytest.mark.parametrize(
    "kwargs", [{"vace_video_mask": random_clip(0, 9, 64)}, {"vace_scale": [1.0, 2.0, 3.0]}]
)
def test_bad_inputs_are_explained(pipe: Any, kwargs: dict[str, Any]) -> None:
    from diffsynth_core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="vace_video|VACE layer"):
        pipe(
            prompt="x",
            num_frames=5,
            height=32,
            width=32,
            num_inference_steps=1,
            progress=False,
            output_type="latent",
            **kwargs,
        )
