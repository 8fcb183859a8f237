"""``--distributed``: which accelerate engine each mode builds, with which configuration, and
the one-line errors (fast, one process; the two-process runs are in test_fsdp.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_core.errors import ConfigError
from diffsynth_core.training import distributed
from diffsynth_core.training.settings import BY_NAME


def test_the_setting_offers_every_mode_and_defaults_to_accelerates_config() -> None:
    setting = BY_NAME["distributed"]
    assert setting.choices == distributed.MODES == ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
    assert setting.default is None and setting.on_resume == "refuse"


def test_fsdp_plugin_is_fsdp2_block_wrapped_sharded_and_keeps_fp32_trainables() -> None:
    plugin = distributed.fsdp_plugin("bf16")
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert str(plugin.state_dict_type).endswith("SHARDED_STATE_DICT")
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    # compute in bf16; gradients reduced in fp32 onto the fp32 sharded weights
    policy = plugin.mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert distributed.fsdp_plugin("no").mixed_precision_policy is None


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_per_zero_stage(stage: int) -> None:
    config = distributed.deepspeed_config(stage, gradient_accumulation_steps=4, batch_size=2, max_grad_norm=1.0)
    assert config["zero_optimization"]["stage"] == stage
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (2, 4)
    assert config["gradient_clipping"] == 1.0
    gathers = config["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save")
    assert gathers is (True if stage == 3 else None)  # ZeRO-3: the final file is gathered
    assert distributed.deepspeed_config(stage, 1, 1, None)["gradient_clipping"] == 0.0
    plugin = distributed.deepspeed_plugin(config)  # accelerate's plugin reads it (no DeepSpeed needed)
    assert plugin.zero_stage == stage


def test_deepspeed_modes_build_accelerate_deepspeed_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate

    built: dict[str, Any] = {}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "deepspeed" else None)
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: built.update(kwargs))
    distributed.make_accelerator("deepspeed-zero3", "bf16", gradient_accumulation_steps=2, batch_size=3)
    plugin = built["deepspeed_plugin"]
    assert plugin.zero_stage == 3 and plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 3
    assert built["mixed_precision"] == "bf16" and built["gradient_accumulation_steps"] == 2


def test_deepspeed_without_deepspeed_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--distributed deepspeed-zero2 needs DeepSpeed, which is not installed"):
        distributed.make_accelerator("deepspeed-zero2")


@pytest.mark.parametrize(
    ("mode", "variable"), [("ddp", "ACCELERATE_USE_FSDP"), ("fsdp", "ACCELERATE_USE_DEEPSPEED")]
)
def test_a_mode_against_the_launch_config_is_refused(mode: str, variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "true")
    with pytest.raises(ConfigError, match=f"--distributed {mode}, but accelerate launch was configured for"):
        distributed.check_mode(mode)


def test_one_process_fsdp_and_ddp_train_unsharded() -> None:
    for mode in ("fsdp", "ddp", None):
        accelerator = distributed.make_accelerator(mode, "no")
        assert distributed.kind(accelerator) == "" and accelerator.num_processes == 1
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def _toy_module(tiny: Path, lora: bool = True) -> Any:
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.testing import use_toy_plugin
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    use_toy_plugin()
    pipe = load_pipeline("toy", model_path=str(tiny))
    if lora:
        switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules="to_q", lora_rank=2)
    else:
        switch_pipe_to_training_mode(pipe, trainable_models="dit")
    return PipelineTrainingModule(pipe, lambda pipe, **inputs: torch.zeros(()))


def test_fsdp_wraps_the_declared_blocks_and_leaves_frozen_models_whole(tiny_toy: Path) -> None:
    plugin = distributed.fsdp_plugin()
    module = _toy_module(tiny_toy)
    distributed._wrap_blocks(plugin, module)
    assert plugin.transformer_cls_names_to_wrap == ["ToyBlock"]  # ModelFamily.blocks of the toy
    assert {id(m) for m in plugin.ignored_modules} == {id(module.pipe.vae), id(module.pipe.text_encoder)}


def test_fsdp_of_a_model_without_declared_blocks_is_one_clear_error(tiny_toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    module = _toy_module(tiny_toy, lora=False)
    monkeypatch.setattr(module.pipe, "family", dataclasses.replace(module.pipe.family, blocks={}))
    with pytest.raises(ConfigError, match=r"--distributed fsdp needs the transformer blocks of 'dit'"):
        distributed._wrap_blocks(distributed.fsdp_plugin(), module)


def test_an_accelerate_config_naming_the_classes_is_kept(tiny_toy: Path) -> None:
    plugin = distributed.fsdp_plugin()
    plugin.transformer_cls_names_to_wrap = ["ToyBlock", "Linear"]
    distributed._wrap_blocks(plugin, _toy_module(tiny_toy))
    assert plugin.transformer_cls_names_to_wrap == ["ToyBlock", "Linear"]


EXPECTED_CONFIGS = {
    "multi_gpu.yaml": "MULTI_GPU", "multi_node.yaml": "MULTI_GPU", "fsdp2.yaml": "FSDP",
    "deepspeed_zero2.yaml": "DEEPSPEED", "deepspeed_zero3.yaml": "DEEPSPEED", "cpu_two_processes.yaml": "MULTI_CPU",
}  # fmt: skip


def test_the_shipped_accelerate_configs_load_as_accelerate_reads_them() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).resolve().parents[2] / "examples" / "accelerate"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(EXPECTED_CONFIGS)
    for name, kind in EXPECTED_CONFIGS.items():
        config = load_config_from_file(str(folder / name))
        assert str(config.distributed_type).endswith(kind), name
        assert "diffsynth_core.cli.main train" in (folder / name).read_text()  # its command
    fsdp = load_config_from_file(str(folder / "fsdp2.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    for stage in (2, 3):
        config = load_config_from_file(str(folder / f"deepspeed_zero{stage}.yaml"))
        assert config.deepspeed_config["zero_stage"] == stage


class _ShardedAccelerator:
    """The attributes the sharding checks read, of a two-process FSDP run."""

    distributed_type = "DistributedType.FSDP"
    num_processes = 2


def test_sample_images_under_sharding_are_refused_before_training() -> None:
    from types import SimpleNamespace

    with pytest.raises(ConfigError, match="sample images are not made under sharded training"):
        distributed.prepare_sharding(_ShardedAccelerator(), torch.nn.Linear(2, 2), SimpleNamespace(sample_prompts=["a cat"]))


def test_a_sharded_state_is_not_resumed_unsharded(tmp_path: Path) -> None:
    from accelerate import Accelerator

    from diffsynth_core.errors import ResumeError
    from diffsynth_core.training.state import STATE_FILE, TrainingStates

    folder = tmp_path / "state" / "step-000002"
    (folder / "accelerate").mkdir(parents=True)
    layout = {"dataset_size": 4}
    (folder / STATE_FILE).write_text(json.dumps({"position": {"epoch": 0, "batch": 2, "step": 2}, "layout": layout}))
    with pytest.raises(ResumeError, match="saved with sharding"):
        TrainingStates(tmp_path / "state", layout).load(Accelerator(cpu=True), torch.nn.Linear(2, 2), None, folder)
