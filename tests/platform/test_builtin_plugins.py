"""The built-in plugins: checkpoint names, export formats and the unit runner hook."""

from __future__ import annotations

import pytest
import torch

from diffsynth_core import ModelFamily, TrainingDefaults, hookimpl
from diffsynth_core.errors import UnknownFormatError
from diffsynth_core.pipeline import BasePipeline, PipelineUnit
from diffsynth_core.plugins import PluginManager

LORA = {"transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 4)}
KEY = "transformer_blocks.0.attn.to_q.lora_A.weight"


@pytest.fixture(scope="module")
def manager() -> PluginManager:
    return PluginManager.with_plugins()


@pytest.mark.parametrize(
    ("kind", "step", "epoch", "expected"),
    [
        ("step", 100, 0, "step-000100.safetensors"),
        ("epoch", 250, 2, "epoch-2.safetensors"),
        ("final", 300, 3, "final.safetensors"),
    ],
)
def test_default_checkpoint_names(manager, kind, step, epoch, expected):
    name = manager.hook.diffsynth_checkpoint_name(kind=kind, step=step, epoch=epoch, family=None)
    assert name == expected


def test_a_plugin_names_its_own_familys_checkpoints_first(manager):
    class Named:
        @hookimpl
        def diffsynth_checkpoint_name(self, kind, step, family):
            return f"mine-{step}.safetensors" if family and family.name == "mine" else None

    plugged = PluginManager.with_plugins(Named())
    mine = ModelFamily(name="mine", description="")
    call = plugged.hook.diffsynth_checkpoint_name
    assert call(kind="step", step=5, epoch=0, family=mine) == "mine-5.safetensors"
    assert call(kind="step", step=5, epoch=0, family=None) == "step-000005.safetensors"


@pytest.mark.parametrize(
    ("fmt", "prefix"),
    [("diffusers", "transformer."), ("comfyui", "diffusion_model."), ("peft", "")],
)
def test_lora_formats_prefix_keys(manager, fmt, prefix):
    converted = manager.convert_state_dict(LORA, fmt, family=None, kind="lora")
    assert list(converted) == [prefix + KEY]
    assert converted[prefix + KEY] is LORA[KEY]


def test_diffusers_prefix_follows_the_familys_export_prefix(manager):
    family = ModelFamily(name="wan", description="", defaults=TrainingDefaults(export_prefix="dit"))
    assert list(manager.convert_state_dict(LORA, "diffusers", family=family)) == ["dit." + KEY]


@pytest.mark.parametrize("fmt", ["diffusers", "comfyui", "peft"])
def test_full_weights_keep_bare_keys(manager, fmt):
    assert list(manager.convert_state_dict(LORA, fmt, kind="full")) == [KEY]


def test_an_unknown_format_is_an_error(manager):
    assert (
        manager.hook.diffsynth_convert_state_dict(
            state_dict=LORA, format="kohya", family=None, kind="lora"
        )
        is None
    )
    with pytest.raises(UnknownFormatError, match="'kohya'"):
        manager.convert_state_dict(LORA, "kohya")


class Double(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(input_params=("x",), output_params=("x",))

    def process(self, pipe, x):
        return {"x": x * 2}


class AddOne(Double):
    def process(self, pipe, x):
        return {"x": x + 1}


def test_unit_wrappers_observe_every_unit_run(installed):
    seen: list[tuple[str, int, int]] = []

    class Observer:
        @hookimpl(wrapper=True)
        def diffsynth_run_unit(self, unit, inputs_shared):
            before = inputs_shared["x"]
            result = yield
            seen.append((unit.name, before, result[0]["x"]))
            return result

    installed(PluginManager.with_plugins(Observer()))
    pipe = BasePipeline()
    pipe.add_units([Double(), AddOne()])
    shared, _, _ = pipe.run_units({"x": 3}, {}, {})
    assert shared["x"] == 7
    assert seen == [("Double", 3, 6), ("AddOne", 6, 7)]


def test_a_plugin_can_replace_one_units_run(installed):
    class Replace:
        @hookimpl
        def diffsynth_run_unit(self, unit, inputs_shared, inputs_posi, inputs_nega):
            if unit.name != "AddOne":
                return None
            return {**inputs_shared, "x": -1}, inputs_posi, inputs_nega

    installed(PluginManager.with_plugins(Replace()))
    pipe = BasePipeline()
    pipe.add_units([Double(), AddOne()])
    assert pipe.run_units({"x": 3}, {}, {})[0]["x"] == -1
