"""ModelLogger: names and keys through the hooks, metadata, atomic writes, pruning, full weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from safetensors.torch import load_file

from diffsynth_core import hookimpl
from diffsynth_core.errors import NonFiniteLossError, UnknownFormatError
from diffsynth_core.lora.inject import lora_state_dict
from diffsynth_core.training.logger import ModelLogger

from .conftest import toy_module


class FakeAccelerator:
    """Single process: what ModelLogger.save needs from accelerate."""

    is_main_process = True

    def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass


def _random_lora(module: Any) -> Any:
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.normal_()
    return module


def _logger(toy_manager: Any, out: Path, **kwargs: Any) -> ModelLogger:
    family = toy_manager.get_family("toy")
    return ModelLogger(
        out, "pipe.dit.", family=family, metadata={"training_args": {"lr": 0.1}}, **kwargs
    )


def test_lora_file_keys_values_and_metadata(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    module = _random_lora(toy_module(tiny_toy))
    path = _logger(toy_manager, tmp_path).save(FakeAccelerator(), module, "step", 10, 0)
    assert path == tmp_path / "step-000010.safetensors"
    saved = load_file(str(path))
    expected = lora_state_dict(module.pipe.dit)
    assert set(saved) == {"transformer." + k for k in expected}  # diffusers' form
    assert all(torch.equal(saved["transformer." + k], v) for k, v in expected.items())
    with safetensors.safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "pt" and meta["diffsynth.family"] == "toy"
    assert meta["diffsynth.step"] == "10" and meta["diffsynth.kind"] == "step"
    assert meta["diffsynth.lora_rank"] == "4" and meta["diffsynth.lora_alpha"] == "4"
    assert json.loads(meta["diffsynth.lora_target_modules"]) == ["to_k", "to_out", "to_q", "to_v"]
    assert json.loads(meta["diffsynth.target_modules"]) == sorted(
        f"transformer_blocks.{i}.{t}" for i in (0, 1) for t in ("to_k", "to_out", "to_q", "to_v")
    )
    assert json.loads(meta["diffsynth.training_args"]) == {"lr": 0.1}
    assert json.loads(meta["diffsynth.base_models"]) == ["diffsynth/toy"]


def test_comfyui_format_and_a_plugin_naming_hook(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    class Names:
        @hookimpl
        def diffsynth_checkpoint_name(self, kind: str, step: int) -> str:
            return f"my-{kind}-{step}.safetensors"

    toy_manager.register_object(Names(), "names")
    path = _logger(toy_manager, tmp_path, export_format="comfyui").save(
        FakeAccelerator(), toy_module(tiny_toy), "final", 3, 0
    )
    assert path.name == "my-final-3.safetensors"
    assert all(k.startswith("diffusion_model.transformer_blocks.") for k in load_file(str(path)))


def test_unknown_format_fails_before_training(toy_manager: Any, tmp_path: Path) -> None:
    with pytest.raises(UnknownFormatError, match="kohya-xl"):
        _logger(toy_manager, tmp_path, export_format="kohya-xl")


def test_keep_last_prunes_old_step_and_epoch_checkpoints_never_the_final(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    logger, module = _logger(toy_manager, tmp_path, keep_last=2), toy_module(tiny_toy)
    logger.save(FakeAccelerator(), module, "final", 1, 0)  # an earlier session's final
    logger.save(FakeAccelerator(), module, "epoch", 1, 0)
    for step in (2, 4):
        logger.save(FakeAccelerator(), module, "step", step, 1)
    logger.save(FakeAccelerator(), module, "epoch", 4, 1)
    names = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert names == ["epoch-1.safetensors", "final.safetensors", "step-000004.safetensors"]
    assert [e["file"] for e in logger.saved()] == [
        "final.safetensors",
        "step-000004.safetensors",
        "epoch-1.safetensors",
    ]


def test_every_process_reports_the_real_checkpoint_path(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    class OtherProcess(FakeAccelerator):
        is_main_process = False

    logger, module = _logger(toy_manager, tmp_path), toy_module(tiny_toy)
    path = logger.save(OtherProcess(), module, "final", 3, 0)
    assert path == tmp_path / "final.safetensors"  # was None: rank 1 printed "checkpoint None"
    assert not path.exists()  # ... and still only the main process writes


def test_a_crash_mid_write_leaves_the_previous_checkpoint_newest_and_intact(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, module = _logger(toy_manager, tmp_path), _random_lora(toy_module(tiny_toy))
    first = logger.save(FakeAccelerator(), module, "step", 1, 0)
    good = first.read_bytes()

    def half_then_die(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"\x00" * 1000)  # a truncated file, as a kill would leave
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_die)
    _random_lora(module)
    with pytest.raises(KeyboardInterrupt):
        logger.save(FakeAccelerator(), module, "step", 2, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints.json",
        "step-000001.safetensors",
    ]
    assert first.read_bytes() == good and logger.latest() == first
    with pytest.raises(KeyboardInterrupt):  # same target name as an existing file: still untouched
        logger.save(FakeAccelerator(), module, "step", 1, 0)
    assert first.read_bytes() == good


def test_full_training_checkpoint_has_bare_keys(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    pipe = load_pipeline("toy", model_path=str(tiny_toy))
    switch_pipe_to_training_mode(pipe, trainable_models="dit")
    path = _logger(toy_manager, tmp_path).save(
        FakeAccelerator(), PipelineTrainingModule(pipe, lambda *a, **k: 0), "final", 1, 0
    )
    saved = load_file(str(path))
    assert saved.keys() == pipe.dit.state_dict().keys()
    with safetensors.safe_open(str(path), "pt") as handle:
        assert handle.metadata()["diffsynth.weights"] == "full"


def test_nan_weights_are_never_written(toy_manager: Any, tiny_toy: Path, tmp_path: Path) -> None:
    module = toy_module(tiny_toy)
    with torch.no_grad():
        next(p for n, p in module.named_parameters() if "lora_A" in n)[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="NaN"):
        _logger(toy_manager, tmp_path).save(FakeAccelerator(), module, "final", 1, 0)
    assert not list(tmp_path.glob("*.safetensors"))
