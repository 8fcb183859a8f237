"""Wan VACE's transformer from one file in Wan's original key layout (what the Wan repository
and ComfyUI ship), converted by diffusers' single-file loading, is the diffusers folder's."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("diffsynth_vace") is None, reason="the wan-vace plugin"
)

# diffusers' names -> Wan's original ones: the inverse of diffusers'
# convert_wan_transformer_to_diffusers (the test checks that it is)
RENAMES = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("norm2", "norm__swap"), ("norm3", "norm2"), ("norm__swap", "norm3"),
    ("proj_in", "before_proj"),
]  # fmt: skip


def _original(key: str) -> str:
    for new, old in RENAMES:
        key = key.replace(new, old)
    if key.startswith("vace_blocks."):
        key = key.replace(".proj_out.", ".after_proj.")
    elif key.startswith("proj_out."):
        key = "head.head." + key.removeprefix("proj_out.")
    if key == "scale_shift_table":
        return "head.modulation"
    return key.replace(".scale_shift_table", ".modulation")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from diffsynth_core.cli.run import presets
    from diffsynth_core.plugins import get_plugin_manager, reset_plugin_manager

    root = tmp_path_factory.mktemp("wan-single-file")
    before = {k: os.environ.get(k) for k in ("DIFFSYNTH_CACHE", "DIFFSYNTH_LOAD_PLUGINS")}
    os.environ["DIFFSYNTH_CACHE"] = str(root / "cache")
    os.environ.pop("DIFFSYNTH_LOAD_PLUGINS", None)
    reset_plugin_manager(None)
    yield presets.tiny_folder(get_plugin_manager().get_family("wan-vace"))
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_plugin_manager(None)


def _dit(tiny: Path, **files: str) -> dict[str, torch.Tensor]:
    from diffsynth_core.cli.run.presets import model_configs
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager

    family = get_plugin_manager().get_family("wan-vace")
    configs, _ = model_configs(family, str(tiny), None, files=dict(files))
    return load_pipeline(family, configs).dit.state_dict()


def test_a_wan_original_layout_file_loads_as_the_diffusers_folder(
    tiny: Path, tmp_path: Path
) -> None:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tiny / "transformer" / "diffusion_pytorch_model.safetensors"))
    original = {_original(k): v for k, v in weights.items()}
    assert "head.head.weight" in original and "blocks.0.self_attn.q.weight" in original
    assert "vace_blocks.0.before_proj.weight" in original and "blocks.0.norm3.weight" in original
    assert convert_wan_transformer_to_diffusers(dict(original)).keys() == weights.keys()
    file = tmp_path / "wan2.1_vace_1.3B.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in original.items()}, str(file))

    reference, loaded = _dit(tiny), _dit(tiny, transformer=str(file))
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
