"""Peers' spellings: refused with ours named; ``diffsynth convert-config`` writes a TOML that
``--config`` loads, with the peers' values converted and what has no equivalent named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.convert_config import convert_file, read_arg_list
from diffsynth_core.cli.main import build_cli
from diffsynth_core.cli.peers import PEERS, flag_suggestion, key_suggestion
from diffsynth_core.cli.run.config import TrainConfig, read_config_file, split_file_values
from diffsynth_core.training.settings import BY_NAME

DS_SCRIPT = r"""#!/bin/bash
accelerate launch examples/qwen_image/model_training/train.py \
  --dataset_base_path {data} \
  --dataset_metadata_path {data}/metadata.csv \
  --max_pixels 1048576 \
  --dataset_repeat 50 \
  --model_id_with_origin_paths "Qwen/Qwen-Image:transformer/diffusion_pytorch_model*.safetensors" \
  --learning_rate 1e-4 \
  --num_epochs 5 \
  --remove_prefix_in_ckpt "pipe.dit." \
  --output_path "./models/train/Qwen-Image_lora" \
  --lora_base_model "dit" \
  --lora_target_modules "to_q,to_k,to_v,to_out.0" \
  --lora_rank 32 \
  --use_gradient_checkpointing \
  --save_steps=100 \
  --find_unused_parameters  # DDP
"""

MUSUBI_DATASET = """
[general]
resolution = [960, 544]
caption_extension = ".caption"
batch_size = 2
enable_bucket = true

[[datasets]]
image_directory = "/data/images"
cache_directory = "/data/cache"
num_repeats = 3
"""

MUSUBI_ARGS = """
learning_rate = 2e-4
network_dim = 16
network_alpha = 8
network_module = "networks.lora_qwen_image"
max_train_epochs = 10
timestep_sampling = "shift"
discrete_flow_shift = 3.0
weighting_scheme = "none"
min_timestep = 100
max_timestep = 900
optimizer_type = "AdamW8bit"
output_dir = "out"
"""

AITK = """
job: extension
config:
  name: my_lora
  process:
    - type: sd_trainer
      training_folder: output
      trigger_word: p3r5on
      network: {type: lora, linear: 16, linear_alpha: 8}
      save: {dtype: float16, save_every: 250, max_step_saves_to_keep: 4}
      datasets:
        - {folder_path: /data/person, caption_ext: txt, caption_dropout_rate: 0.05, resolution: [512, 768]}
      train: {batch_size: 1, steps: 2000, lr: 1e-4, optimizer: adamw8bit, dtype: bf16, noise_scheduler: flowmatch}
      model: {name_or_path: black-forest-labs/FLUX.1-dev, is_flux: true}
      sample: {sample_every: 250, sample_steps: 20}
"""


def _loaded(path: Path) -> dict[str, Any]:
    """The TOML as ``diffsynth train --config`` reads and checks it."""
    values = read_config_file(path)
    config, _ = split_file_values(values, set(), f"--config {path}")
    TrainConfig(**config)  # range checks
    return config


def _convert(tmp_path: Path, name: str, text: str) -> tuple[dict[str, Any], str, list[str]]:
    source = tmp_path / name
    source.write_text(text)
    toml, conversion = convert_file(source)
    (tmp_path / "out.toml").write_text(toml)
    return _loaded(tmp_path / "out.toml"), toml, conversion.left_out


def test_a_diffsynth_studio_script(tmp_path: Path) -> None:
    config, toml, left_out = _convert(tmp_path, "train.sh", DS_SCRIPT.format(data="data/x"))
    assert config == {
        "model": "qwen-image", "dataset": "data/x", "metadata": "data/x/metadata.csv", "max_pixels": 1048576,
        "repeat": 50, "learning_rate": 1e-4, "num_epochs": 5, "output": "./models/train/Qwen-Image_lora",
        "lora_base_model": "dit", "lora_target_modules": "to_q,to_k,to_v,to_out.0", "lora_rank": 32,
        "gradient_checkpointing": True, "save_every_n_steps": 100,
    }  # fmt: skip
    assert [item.split(":")[0] for item in left_out] == [
        "model_id_with_origin_paths", "remove_prefix_in_ckpt", "find_unused_parameters",
    ]  # fmt: skip
    assert "# no equivalent in diffsynth train:\n#   model_id_with_origin_paths: " in toml


def test_a_musubi_dataset_config_and_training_arguments(tmp_path: Path) -> None:
    config, _, left_out = _convert(tmp_path, "dataset.toml", MUSUBI_DATASET)
    assert config == {"max_pixels": 960 * 544, "caption_extension": ".caption", "batch_size": 2,
                      "dataset": "/data/images", "repeat": 3}  # fmt: skip
    assert {item.split(":")[0] for item in left_out} == {"enable_bucket", "cache_directory"}
    config, _, left_out = _convert(tmp_path, "args.toml", MUSUBI_ARGS)
    assert config == {
        "learning_rate": 2e-4, "lora_rank": 16, "lora_alpha": 8.0, "num_epochs": 10, "timestep_sampling": "shift",
        "flow_shift": 3.0, "loss_weighting": "none", "max_timestep_boundary": 0.9, "min_timestep_boundary": 0.1,
        "optimizer": "bitsandbytes.optim.AdamW8bit", "output": "out",
    }  # fmt: skip
    assert [item.split(":")[0] for item in left_out] == ["network_module"]


def test_training_arguments_in_sections_are_read_as_flat(tmp_path: Path) -> None:
    text = "[optimizer_arguments]\nlearning_rate = 3e-4\n[network_arguments]\nnetwork_dim = 4\n"
    config, _, _ = _convert(tmp_path, "args.toml", text)
    assert config == {"learning_rate": 3e-4, "lora_rank": 4}


def test_a_musubi_command_line_reads_its_dataset_config(tmp_path: Path) -> None:
    (tmp_path / "dataset.toml").write_text(MUSUBI_DATASET)
    line = "accelerate launch qwen_image_train_network.py --dataset_config dataset.toml --network_dim 8\n"
    config, _, _ = _convert(tmp_path, "run.sh", line)
    assert config["dataset"] == "/data/images" and config["lora_rank"] == 8


def test_an_ai_toolkit_job(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    config, _, left_out = _convert(tmp_path, "job.yaml", AITK)
    assert config == {
        "output": "output/my_lora", "caption_extension": ".txt", "max_pixels": 768 * 768, "model": "flux-dev",
        "trigger_word": "p3r5on", "lora_rank": 16, "lora_alpha": 8.0, "save_every_n_steps": 250, "keep_last": 4,
        "batch_size": 1, "max_steps": 2000, "learning_rate": 1e-4, "optimizer": "bitsandbytes.optim.AdamW8bit",
        "mixed_precision": "bf16", "sample_every": 250, "sample_steps": 20, "dataset": "/data/person",
        "caption_dropout": 0.05,
    }  # fmt: skip
    left = {item.split(":")[0] for item in left_out}
    assert {"model.name_or_path", "network.type", "save.dtype", "train.noise_scheduler"} <= left


def test_arg_lists_take_every_form_of_flag() -> None:
    pairs = read_arg_list("python train.py --a 1 --b=2 --switch --c 'x y' # a comment\n--d \\\n 4")
    assert pairs == [("a", "1"), ("b", "2"), ("switch", True), ("c", "x y"), ("d", "4")]


def test_every_peer_name_is_refused_with_ours_or_with_why() -> None:
    for name, peer in PEERS.items():
        if name in BY_NAME and "_" not in name:
            continue  # `--seed` is our own flag too
        message = flag_suggestion("--" + name)
        assert message is not None, name
        if peer.target in BY_NAME:
            assert "--" + peer.target.replace("_", "-") in message, message
        else:
            assert "no equivalent" in message and (peer.note or peer.target or "") in message, message
        if name not in BY_NAME:  # (ours spelt with underscores is a valid config key)
            assert key_suggestion(name, "--config f.toml") is not None, name
    assert flag_suggestion("--no-such-flag") is None and flag_suggestion("--lora-rank") is None


@pytest.mark.slow
def test_a_converted_script_trains(toy_manager: Any, tiny_toy: Path, tmp_path: Path) -> None:
    from diffsynth_core.testing import make_image_dataset

    data = make_image_dataset(tmp_path / "data", 2, 32)
    script = tmp_path / "train.sh"
    script.write_text(DS_SCRIPT.format(data=data).replace("qwen_image", "toy").replace("1048576", "1024"))
    runner = CliRunner()
    converted = runner.invoke(build_cli(toy_manager), ["convert-config", str(script), "-o", str(tmp_path / "run.toml")])
    assert converted.exit_code == 0, converted.output
    assert "not converted: find_unused_parameters" in converted.stderr
    out = tmp_path / "run"
    result = runner.invoke(build_cli(toy_manager), [
        "train", "--config", str(tmp_path / "run.toml"), "--model", "toy", "--model-path", str(tiny_toy),
        "--output", str(out), "--max-steps", "1", "--lora-target-modules", "to_q,to_k",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "final.safetensors").is_file()


def test_help_lists_the_command(toy_manager: Any) -> None:
    result = CliRunner().invoke(build_cli(toy_manager), ["--help"])
    assert "convert-config" in result.output
