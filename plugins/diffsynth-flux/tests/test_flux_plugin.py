"""The plugin: cheap import, entry point, both families, the tiny presets, loading, conformance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_core.errors import ConfigError, ModelFileError
from diffsynth_core.loading import ModelConfig
from diffsynth_core.plugins import get_plugin_manager
from diffsynth_flux.loading import load_component, load_flux_pipeline


def test_plugin_module_imports_no_torch_or_diffusers() -> None:
    code = (
        "import sys, diffsynth_flux.plugin as p; p.families();"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_registers_dev_and_schnell() -> None:
    manager = get_plugin_manager()
    dev, schnell = manager.get_family("flux-dev"), manager.get_family("flux-schnell")
    assert dev.distribution == schnell.distribution == "diffsynth-flux" and not manager.broken()
    assert dev.model_files["dit"].model_id == "black-forest-labs/FLUX.1-dev"
    assert schnell.model_files["text_encoder_2"].model_id == "black-forest-labs/FLUX.1-schnell"
    assert dev.model_files["tokenizer_2"].origin_file_pattern == "tokenizer_2/"
    options = {f.name: {o.name: o.default for o in f.options} for f in (dev, schnell)}
    assert (
        options["flux-dev"]["guidance_scale"] == 3.5
        and "guidance_scale" not in options["flux-schnell"]
    )
    assert options["flux-dev"]["max_sequence_length"] == 512
    assert options["flux-schnell"]["max_sequence_length"] == 256
    assert dev.defaults.export_prefix == "transformer" and dev.defaults.division_factor == 16


def test_tiny_preset_is_the_official_layout(tiny_dirs: dict[str, Path]) -> None:
    for variant, folder in tiny_dirs.items():
        index = json.loads((folder / "model_index.json").read_text())
        assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
        assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
        assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
        for pattern in ("transformer/diffusion_pytorch_model*.safetensors", "text_encoder/model*.safetensors",
                        "text_encoder_2/model*.safetensors", "vae/diffusion_pytorch_model.safetensors",
                        "tokenizer/tokenizer.json", "tokenizer_2/tokenizer.json"):  # fmt: skip
            assert list(folder.glob(pattern)), pattern
        dit = json.loads((folder / "transformer" / "config.json").read_text())
        assert dit["guidance_embeds"] == (variant == "flux-dev")
        vae = json.loads((folder / "vae" / "config.json").read_text())
        assert (vae["latent_channels"], vae["scaling_factor"], vae["shift_factor"]) == (
            16,
            0.3611,
            0.1159,
        )
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 5e6


def test_tiny_weights_and_tokenizers_are_deterministic(tiny_dirs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    from diffsynth_flux.tiny import tiny_transformer
    from diffsynth_flux.tiny_tokenizer import clip_bpe, t5_vocab

    saved = load_file(
        str(tiny_dirs["flux-dev"] / "transformer" / "diffusion_pytorch_model.safetensors")
    )
    rebuilt = tiny_transformer().state_dict()
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[k], rebuilt[k]) for k in saved)
    # the tokenizers too: the BPE trainer of the tokenizers library breaks ties in a hash
    # order, so the CLIP vocabulary is built instead of trained
    folder = tiny_dirs["flux-dev"]
    clip = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]
    assert clip["vocab"] == clip_bpe()[0] and [tuple(m) for m in clip["merges"]] == clip_bpe()[1]
    t5 = json.loads((folder / "tokenizer_2" / "tokenizer.json").read_text())["model"]
    assert [tuple(p) for p in t5["vocab"]] == t5_vocab()


def test_tokenizers_read_captions_as_words(pipes: dict[str, Any]) -> None:
    pipe = pipes["flux-dev"]
    clip = pipe.tokenizer("a red circle in the center").input_ids
    assert clip[0] == pipe.tokenizer.bos_token_id and clip[-1] == pipe.tokenizer.eos_token_id
    assert len(clip) == 2 + 6 and pipe.tokenizer.model_max_length == 77
    t5 = pipe.tokenizer_2("a red circle in the center").input_ids
    assert len(t5) == 6 + 1 and t5[-1] == pipe.tokenizer_2.eos_token_id
    unseen = pipe.tokenizer("Unseen wörds, 123!").input_ids
    assert pipe.tokenizer.unk_token_id not in unseen[1:-1]  # every byte has a token


def test_scheduler_config_is_read_beside_the_transformer(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    for name in ("transformer", "scheduler"):
        shutil.copytree(tiny_dirs["flux-dev"] / name, tmp_path / name)
    config_file = tmp_path / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "max_shift": 1.5}))
    dit = {"dit": ModelConfig(path=tmp_path, origin_file_pattern="transformer/*.safetensors")}
    assert (
        load_flux_pipeline("flux-dev", dit, "cpu", torch.float32).scheduler.config.max_shift == 1.5
    )
    config_file.unlink()  # a copy without scheduler/: the official values
    assert (
        load_flux_pipeline("flux-dev", dit, "cpu", torch.float32).scheduler.config.max_shift == 1.15
    )


def test_weights_without_config_are_a_clear_error(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    shutil.copy(
        tiny_dirs["flux-dev"] / "vae" / "diffusion_pytorch_model.safetensors",
        tmp_path / "vae.safetensors",
    )
    with pytest.raises(ModelFileError, match="no config.json"):
        load_component("vae", ModelConfig(path=tmp_path / "vae.safetensors"), torch.float32)
    with pytest.raises(ConfigError, match="no component 'unet'"):
        load_component("unet", ModelConfig(path=tiny_dirs["flux-dev"] / "vae"), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux-dev", "flux-schnell"])
def test_family_conformance(family: str, tmp_path: Path) -> None:
    """The core's checks: a training step, inference, the LoRA export round trip (diffusers,
    comfyui, peft), each merged file predicting as the LoRA layers do."""
    from diffsynth_core.testing import check_family_conformance

    report = check_family_conformance(family, workdir=tmp_path, height=32, width=32)
    assert "LoRA merge (comfyui)" in report.passed and "LoRA export (comfyui)" in report.passed


def test_only_core_module_imports_the_core() -> None:
    """Every diffsynth-core name goes through ``diffsynth_flux._core`` (so moving to the
    public face is one file)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "diffsynth_flux"
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n.split(".")[0] == "diffsynth_core" for n in names) and path.name != "_core.py":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
