"""The typed contracts: BasePipeline declares the inference call, families conform, and every
package ships its ``py.typed`` marker (mypy itself runs in ``tox -e type``)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from diffsynth_core import BasePipeline
from diffsynth_core.cli.generate import _call_arguments

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    ROOT: "diffsynth_core",
    ROOT / "plugins" / "diffsynth-qwen-image": "diffsynth_qwen_image",
    ROOT / "plugins" / "diffsynth-controlnet": "diffsynth_controlnet",
    ROOT / "plugins" / "diffsynth-vace": "diffsynth_vace",
    ROOT / "plugins" / "diffsynth-flux": "diffsynth_flux",
}
# what `diffsynth generate` (every flag given) and a run's sample images pass
SAMPLING = {"prompt", "seed", "progress", "height", "width", "num_inference_steps"}


def _declared() -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(BasePipeline.__call__).parameters)


def test_base_pipeline_declares_what_generate_and_sampling_pass() -> None:
    flags = {
        "prompt": "a cat", "negative_prompt": "", "height": 64, "width": 64, "steps": 2,
        "cfg_scale": 1.0, "seed": 0,
    }  # fmt: skip
    declared = _declared()
    assert set(_call_arguments(flags)) | SAMPLING <= set(declared)
    assert declared["prompt"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(
        declared[name].kind is inspect.Parameter.KEYWORD_ONLY for name in set(declared) - {"self", "prompt"}
    )


def test_base_pipeline_call_says_what_is_missing() -> None:
    with pytest.raises(NotImplementedError, match=r"BasePipeline does not implement __call__\(prompt"):
        BasePipeline()("a cat")


def _family_pipelines() -> list[type]:
    from diffsynth_core.testing.toy import ToyPipeline
    from diffsynth_flux.pipeline import FluxPipeline
    from diffsynth_qwen_image.pipeline import QwenImagePipeline
    from diffsynth_vace.pipeline import WanVacePipeline

    return [QwenImagePipeline, FluxPipeline, WanVacePipeline, ToyPipeline]


@pytest.mark.parametrize("pipeline", _family_pipelines(), ids=lambda c: c.__name__)
def test_family_pipelines_accept_every_declared_keyword(pipeline: type) -> None:
    """(The ControlNet family runs on the Qwen-Image pipeline.)"""
    params = inspect.signature(pipeline.__call__).parameters
    for name in _declared():
        if name == "self":
            continue
        assert name in params, f"{pipeline.__name__}.__call__ lacks {name}"
        if name != "prompt":
            assert params[name].default is not inspect.Parameter.empty, name


@pytest.mark.parametrize("folder", list(PACKAGES), ids=lambda f: PACKAGES[f])
def test_every_package_ships_py_typed(folder: Path) -> None:
    package = PACKAGES[folder]
    assert (folder / package / "py.typed").is_file()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    data = tomllib.loads((folder / "pyproject.toml").read_text())
    assert "py.typed" in data["tool"]["setuptools"]["package-data"][package]


def test_mypy_checks_the_core_and_every_plugin_package() -> None:
    """A new plugin under plugins/ is type-checked too (`tox -e type` reads this list)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    wanted = {"diffsynth_core"} | {
        str(p.parent.relative_to(ROOT) / p.parent.name.replace("-", "_"))
        for p in (ROOT / "plugins").glob("*/pyproject.toml")
    }
    assert wanted <= set(files)
