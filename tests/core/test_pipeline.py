"""Pipeline units and the unit runner: shared/posi/nega, CFG, take-over, hook wrappers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diffsynth_core import hookimpl
from diffsynth_core.errors import PluginError
from diffsynth_core.pipeline import BasePipeline, PipelineUnit
from diffsynth_core.plugins import get_plugin_manager


class Double(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(input_params=("x",), output_params=("y",))

    def process(self, pipe: BasePipeline, x: int) -> dict[str, Any]:
        return {"y": 2 * x}


class Encode(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(
            separate_cfg=True, input_params=("y",),
            input_params_posi={"text": "prompt"}, input_params_nega={"text": "negative_prompt"},
            output_params=("emb",),
        )

    def process(self, pipe: BasePipeline, y: int, text: str) -> dict[str, Any]:
        return {"emb": f"{text}:{y}"}


class Everything(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(take_over=True, insert_before="Encode")

    def process(self, pipe: BasePipeline, inputs_shared: dict, inputs_posi: dict, inputs_nega: dict) -> tuple:
        inputs_posi["prompt"] = inputs_posi["prompt"].upper()
        return inputs_shared, inputs_posi, inputs_nega


class Liar(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(output_params=("a",))

    def process(self, pipe: BasePipeline) -> dict[str, Any]:
        return {"b": 1}


def _pipe(*units: PipelineUnit) -> BasePipeline:
    pipe = BasePipeline()
    pipe.add_units(units)
    return pipe


def test_units_fill_shared_and_both_cfg_branches() -> None:
    pipe = _pipe(Double(), Encode())
    shared, posi, nega = pipe.run_units({"x": 3, "cfg_scale": 4.0}, {"prompt": "cat"}, {"negative_prompt": "dog"})
    assert shared["y"] == 6 and posi["emb"] == "cat:6" and nega["emb"] == "dog:6"


def test_negative_branch_skipped_without_cfg() -> None:
    pipe = _pipe(Double(), Encode())
    _, posi, nega = pipe.run_units({"x": 1, "cfg_scale": 1}, {"prompt": "cat"}, {"negative_prompt": "dog"})
    assert posi["emb"] == "cat:2" and "emb" not in nega


def test_take_over_unit_inserted_before_named_unit() -> None:
    pipe = _pipe(Double(), Encode())
    pipe.add_units([Everything()])
    assert [u.name for u in pipe.units] == ["Double", "Everything", "Encode"]
    _, posi, _ = pipe.run_units({"x": 1}, {"prompt": "cat"}, {})
    assert posi["emb"] == "CAT:2"


def test_insert_before_unknown_unit_is_an_error() -> None:
    unit = Everything()
    unit.insert_before = "Missing"
    with pytest.raises(PluginError, match="Missing"):
        _pipe(Double()).add_units([unit])


def test_undeclared_output_is_refused() -> None:
    with pytest.raises(TypeError, match="undeclared outputs"):
        _pipe(Liar()).run_units({}, {}, {})


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple]] = []

    @hookimpl(wrapper=True)
    def diffsynth_run_unit(self, unit: PipelineUnit, inputs_shared: dict) -> Any:
        result = yield
        self.seen.append((unit.name, tuple(sorted(result[0]))))
        return result


def test_a_wrapper_plugin_observes_every_unit_run() -> None:
    manager = get_plugin_manager()
    recorder = Recorder()
    manager.pm.register(recorder, name="recorder")
    try:
        _pipe(Double(), Encode()).run_units({"x": 1}, {"prompt": "p"}, {})
    finally:
        manager.pm.unregister(name="recorder")
    assert [name for name, _ in recorder.seen] == ["Double", "Encode"]
    assert recorder.seen[0][1] == ("x", "y")


def test_noise_is_reproducible_from_a_seed() -> None:
    pipe = BasePipeline(torch_dtype=torch.float32)
    a, b = pipe.generate_noise((1, 4), seed=7), pipe.generate_noise((1, 4), seed=7)
    assert torch.equal(a, b) and not torch.equal(a, pipe.generate_noise((1, 4), seed=8))


def test_image_round_trip_and_size_rounding() -> None:
    from PIL import Image

    pipe = BasePipeline()
    image = Image.new("RGB", (8, 4), (255, 0, 127))
    tensor = pipe.preprocess_image([image, image])
    assert tensor.shape == (2, 3, 4, 8) and tensor[0, 0, 0, 0].item() == pytest.approx(1.0)
    assert pipe.tensor_to_images(tensor)[1].getpixel((0, 0)) == (255, 0, 127)
    assert pipe.check_resize_height_width(100, 33) == (112, 48)
