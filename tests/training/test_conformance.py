"""check_family_conformance: the toy family passes; a family that breaks a rule is named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from diffsynth_core import hookimpl
from diffsynth_core.testing import (
    TOY_FAMILY,
    ConformanceError,
    ToyPipeline,
    check_family_conformance,
    load_toy_pipeline,
)


def test_the_toy_family_conforms(toy_manager: Any, tmp_path: Path) -> None:
    report = check_family_conformance("toy", workdir=tmp_path)
    assert {
        "load_pipeline",
        "training step",
        "inference",
        "LoRA export (diffusers)",
        "LoRA merge (comfyui)",
    } <= set(report.passed)


class WrongSizePipeline(ToyPipeline):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **kwargs).resize((8, 8))


class WrongSizePlugin:
    __name__ = "wrong-size"

    @hookimpl
    def diffsynth_register_models(self, register: Any) -> None:
        register(replace(TOY_FAMILY, name="wrong-size"))

    @hookimpl
    def diffsynth_load_pipeline(
        self, family: Any, model_configs: Any, device: str, torch_dtype: Any
    ) -> Any:
        if family.name != "wrong-size":
            return None
        pipe = load_toy_pipeline(model_configs, device, torch_dtype)
        pipe.__class__ = WrongSizePipeline
        return pipe


def test_a_family_returning_the_wrong_size_fails_with_the_rule_named(
    toy_manager: Any, tmp_path: Path
) -> None:
    toy_manager.register_object(WrongSizePlugin(), "wrong-size")
    with pytest.raises(
        ConformanceError, match=r"'wrong-size': inference: asked for 64x64, got \{\(8, 8\)\}"
    ):
        check_family_conformance("wrong-size", workdir=tmp_path)
