"""Family options reach the loading hook; a family can default to full training."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from diffsynth_core import hookimpl
from diffsynth_core.cli.run.config import resolve
from diffsynth_core.pipeline import BasePipeline, load_pipeline
from diffsynth_core.plugins import reset_plugin_manager
from diffsynth_core.registry import ModelFamily, TrainingDefaults
from diffsynth_core.testing import use_toy_plugin

FAMILY = ModelFamily("loads-options", "records what the loader was given")


class Recorder:
    __name__ = "recorder"

    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    @hookimpl
    def diffsynth_register_models(self, register: Any) -> None:
        register(FAMILY)

    @hookimpl
    def diffsynth_load_pipeline(self, family: ModelFamily, options: dict[str, Any]) -> Any:
        if family.name != FAMILY.name:
            return None
        self.options.append(options)
        return BasePipeline()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    plugin = Recorder()
    use_toy_plugin(plugin)
    yield plugin
    reset_plugin_manager()


def test_options_that_decide_what_to_load_reach_the_loader(recorder: Recorder) -> None:
    load_pipeline("loads-options", model_configs={}, options={"controlnet_layers": 2})
    load_pipeline("loads-options", model_configs={})
    assert recorder.options == [{"controlnet_layers": 2}, {}]


def test_a_family_may_default_to_full_training() -> None:
    family = replace(FAMILY, defaults=TrainingDefaults(trainable_models="controlnet", lora_base_model="controlnet", lora_target_modules="to_q"))
    config = resolve({"dataset": "d"}, {}, family)
    assert config.trainable_models == "controlnet" and config.lora_base_model is None
    lora = resolve({"dataset": "d", "lora_base_model": "dit"}, {}, family)
    assert lora.lora_base_model == "dit" and lora.trainable_models is None
    plain = resolve({"dataset": "d"}, {}, replace(FAMILY, defaults=TrainingDefaults(lora_target_modules="to_q")))
    assert plain.lora_base_model == "dit" and plain.trainable_models is None
