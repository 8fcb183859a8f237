"""ModelFamily.blocks: one declaration of the repeated blocks, read by diffsynth_core.blocks."""

from __future__ import annotations

import pytest
import torch

from diffsynth_core import BasePipeline, ModelFamily
from diffsynth_core.blocks import repeated_blocks
from diffsynth_core.errors import ConfigError
from diffsynth_core.testing.conformance import ConformanceError, ConformanceReport, _check_blocks


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
        self.second = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
        self.head = torch.nn.Linear(2, 2)


def _pipe(blocks: dict[str, tuple[str, ...]]) -> BasePipeline:
    pipe = BasePipeline()
    pipe.dit = _Net()
    pipe.family = ModelFamily(name="toy", description="toy", blocks=blocks)
    return pipe


def test_blocks_come_in_declared_order() -> None:
    pipe = _pipe({"dit": ("second", "first")})
    blocks = repeated_blocks(pipe, "dit", "--blocks-to-swap")
    assert blocks == [pipe.dit.second[0], *pipe.dit.first]


def test_a_model_without_blocks_is_one_line_naming_the_option() -> None:
    pipe = _pipe({"dit": ("first",)})
    with pytest.raises(ConfigError, match=r"--blocks-to-swap needs the transformer blocks of 'vae'.*'toy'"):
        repeated_blocks(pipe, "vae", "--blocks-to-swap")


def test_a_wrong_declaration_is_a_plugin_bug_and_conformance_catches_it() -> None:
    pipe = _pipe({"dit": ("head",)})  # a Linear, not a ModuleList
    with pytest.raises(ConfigError, match="not a ModuleList"):
        repeated_blocks(pipe, "dit", "x")
    with pytest.raises(ConformanceError, match="declared blocks"):
        _check_blocks(ConformanceReport("toy"), pipe.family, pipe)
    report = ConformanceReport("toy")
    _check_blocks(report, _pipe({"dit": ("first",)}).family, _pipe({"dit": ("first",)}))
    assert report.passed == ["declared blocks"]
