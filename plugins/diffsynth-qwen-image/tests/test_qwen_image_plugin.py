"""The plugin: cheap import, entry point, family, loading through the hook, the tiny preset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from diffsynth_core.errors import ConfigError, ModelFileError
from diffsynth_core.loading import ModelConfig
from diffsynth_core.plugins import PluginManager
from diffsynth_qwen_image.loading import component_of, configs_by_component
from diffsynth_qwen_image.pipeline import QwenImagePipeline, load_qwen_image_pipeline
from diffsynth_qwen_image.tiny_tokenizer import SPECIAL_TOKENS, build_tokenizer, train_bpe
from diffsynth_qwen_image.units import PROMPT_TEMPLATE


def test_plugin_module_imports_no_torch_or_diffusers() -> None:
    code = (
        "import sys, diffsynth_qwen_image.plugin as p; p.qwen_image_family();"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_registers_the_family() -> None:
    (ep,) = [e for e in metadata.entry_points(group="diffsynth") if e.name == "qwen-image"]
    assert ep.value == "diffsynth_qwen_image.plugin"
    manager = PluginManager()
    manager.load_builtins()
    manager.load_entry_points({"qwen-image"})
    manager.run_registration()
    family = manager.get_family("qwen-image")
    assert family.distribution == "diffsynth-qwen-image" and not manager.broken()
    assert (
        family.model_files["dit"].origin_file_pattern
        == "transformer/diffusion_pytorch_model*.safetensors"
    )
    assert family.model_files["tokenizer"].origin_file_pattern == "tokenizer/"
    d = family.defaults
    assert (d.lora_base_model, d.lora_rank, d.export_prefix, d.remove_prefix_in_ckpt) == (
        "dit",
        32,
        "transformer",
        "pipe.dit.",
    )
    assert d.lora_target_modules.split(",")[-1] == "txt_mod.1" and d.division_factor == 16


def test_load_pipeline_through_the_hook(tiny_dir: Path) -> None:
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_qwen_image.pipeline import QwenImagePipeline

    pipe = load_pipeline("qwen-image", model_path=str(tiny_dir), torch_dtype=torch.bfloat16)
    assert isinstance(pipe, QwenImagePipeline) and pipe.family.name == "qwen-image"
    assert isinstance(pipe.dit, QwenImageTransformer2DModel) and pipe.dit.dtype == torch.bfloat16
    assert isinstance(pipe.vae, AutoencoderKLQwenImage)
    assert isinstance(pipe.text_encoder, Qwen2_5_VLForConditionalGeneration)
    assert pipe.model_names == ("dit", "vae", "text_encoder")
    image = pipe("a cat", height=32, width=48, num_inference_steps=2, seed=0, progress=False)
    assert image.size == (48, 32)


def test_tiny_preset_is_the_official_layout(tiny_dir: Path) -> None:
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "QwenImageTransformer2DModel"]
    assert index["text_encoder"] == ["transformers", "Qwen2_5_VLForConditionalGeneration"]
    for pattern in ("transformer/diffusion_pytorch_model*.safetensors", "text_encoder/model*.safetensors",
                    "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):  # fmt: skip
        assert list(tiny_dir.glob(pattern)), pattern
    assert sum(f.stat().st_size for f in tiny_dir.rglob("*") if f.is_file()) < 20e6


def test_tiny_weights_are_deterministic(tiny_dir: Path) -> None:
    from safetensors.torch import load_file

    from diffsynth_qwen_image.tiny import tiny_transformer

    saved = load_file(str(tiny_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    rebuilt = tiny_transformer().state_dict()
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[k], rebuilt[k]) for k in saved)
    assert train_bpe() == train_bpe()


def test_tokenizer_template_prefix_is_34_tokens(tiny_pipe: QwenImagePipeline) -> None:
    tokenizer = tiny_pipe.tokenizer
    prefix = PROMPT_TEMPLATE.split("{}")[0]
    assert len(tokenizer(prefix)["input_ids"]) == 34
    for text in ("a cat", "a red circle on a plain background", "Unseen wörds, 123!"):
        ids = tokenizer(PROMPT_TEMPLATE.format(text))["input_ids"]
        assert tokenizer.decode(ids[34:-5]) == text  # the prompt starts right after the drop
    assert all(len(tokenizer(t)["input_ids"]) == 1 for t in SPECIAL_TOKENS)
    assert 650 < len(tokenizer) < 900 and len(build_tokenizer()) == len(tokenizer)


def test_seed_configs_map_to_components(tiny_dir: Path) -> None:
    assert (
        component_of(
            ModelConfig(
                model_id="Qwen/Qwen-Image", origin_file_pattern="transformer/x*.safetensors"
            )
        )
        == "dit"
    )
    assert component_of(ModelConfig(path=tiny_dir / "text_encoder")) == "text_encoder"
    assert (
        component_of(ModelConfig(path=tiny_dir / "vae" / "diffusion_pytorch_model.safetensors"))
        == "vae"
    )
    with pytest.raises(ConfigError, match="transformer/, text_encoder/"):
        component_of(ModelConfig(path="/models/something.safetensors"))
    # without a tokenizer config the tokenizer beside the text encoder is used
    configs = configs_by_component(
        [ModelConfig(path=tiny_dir, origin_file_pattern="text_encoder/model*.safetensors")]
    )
    assert configs["tokenizer"].folder() == tiny_dir / "tokenizer"


def test_scheduler_config_is_read_beside_the_transformer(tiny_dir: Path, tmp_path: Path) -> None:
    for name in ("transformer", "scheduler"):
        shutil.copytree(tiny_dir / name, tmp_path / name)
    config_file = tmp_path / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "max_shift": 1.15}))
    dit = {"dit": ModelConfig(path=tmp_path, origin_file_pattern="transformer/*.safetensors")}
    assert load_qwen_image_pipeline(dit, "cpu", torch.float32).scheduler.config.max_shift == 1.15
    config_file.unlink()  # a copy without scheduler/: the official values
    assert load_qwen_image_pipeline(dit, "cpu", torch.float32).scheduler.config.max_shift == 0.9


def test_weights_without_config_are_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    shutil.copy(
        tiny_dir / "vae" / "diffusion_pytorch_model.safetensors", tmp_path / "vae.safetensors"
    )
    with pytest.raises(ModelFileError, match="no config.json"):
        load_qwen_image_pipeline(
            {"vae": ModelConfig(path=tmp_path / "vae.safetensors")}, "cpu", torch.float32
        )
