"""A family carries its loader, units and LoRA layout; LoRA formats are registered objects;
a plugin adds its own hookspecs through ``diffsynth_addhooks`` (Plugin API 1.0, items 3-4)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from click.testing import CliRunner

from diffsynth_core import hookimpl
from diffsynth_core.cli.main import build_cli
from diffsynth_core.errors import PluginError, UnknownFormatError
from diffsynth_core.lora.formats import LoraFormat, LoraLayout
from diffsynth_core.pipeline import BasePipeline, PipelineUnit, load_pipeline
from diffsynth_core.plugins import PluginManager, build_plugin_manager, reset_plugin_manager
from diffsynth_core.registry import ModelFamily, TrainingDefaults

ROOT = Path(__file__).resolve().parents[2]
# the hooks a first-party plugin may still implement: none of them is family-scoped
CROSS_CUTTING = {
    "diffsynth_register_models", "diffsynth_register_lora_formats", "diffsynth_register_commands",
    "diffsynth_addhooks", "diffsynth_register_control_kinds",
}  # fmt: skip


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    yield build_plugin_manager()
    reset_plugin_manager(None)


class Marker(PipelineUnit):
    def __init__(self) -> None:
        super().__init__(output_params=("marked",))

    def process(self, pipe: Any, **kwargs: Any) -> dict[str, Any]:
        return {"marked": True}


def fake_loader(family: ModelFamily, options: dict[str, Any], purpose: str) -> BasePipeline:
    pipe = BasePipeline()
    pipe.loaded_with = (family.name, options, purpose)  # type: ignore[attr-defined]
    return pipe


FAKE = ModelFamily(
    "fake-family", "a family whose loader and units are its own",
    loader=fake_loader, units=lambda pipe: [Marker()],
)  # fmt: skip


def test_a_family_loads_with_its_own_loader_and_no_plugin_answers_for_it(manager):
    """Every installed first-party plugin stays silent for a family that is not theirs: the
    pipeline is exactly the family's loader's, with the family's unit only."""
    assert {"qwen-image", "qwen-image-controlnet", "wan-vace", "flux-dev"} <= {
        f.name for f in manager.families
    }, "the first-party plugins are installed (tox's install_dev)"
    manager.register_object(_FamilyPlugin(), "fake")
    reset_plugin_manager(manager)
    pipe = load_pipeline("fake-family", model_configs={}, options={"x": 1}, purpose="train")
    assert pipe.loaded_with == ("fake-family", {"x": 1}, "train")
    assert [type(u).__name__ for u in pipe.units] == ["Marker"]
    assert manager.hook.diffsynth_import_lora(state_dict={}, family=FAKE, model=None) is None
    converted = manager.hook.diffsynth_convert_state_dict(
        state_dict={"a.lora_A.weight": 0}, format="comfyui", family=FAKE, kind="lora"
    )
    assert converted is None


def test_first_party_plugins_implement_no_family_scoped_hook(manager):
    first_party = {info.name for info in manager.plugins.values() if info.distribution in {
        "diffsynth-qwen-image", "diffsynth-controlnet", "diffsynth-vace", "diffsynth-flux"}}
    assert len(first_party) == 4
    for name in first_party:
        extra = set(manager.plugins[name].hooks) - CROSS_CUTTING
        assert not extra, f"{name} implements family-scoped hooks {extra}"


def test_no_plugin_source_compares_family_names():
    pattern = re.compile(r"family\.name\s*(==|!=|in\b|not in\b)|FAMILY_NAMES|_is_flux\(")
    sources = [p for p in (ROOT / "plugins").glob("*/diffsynth_*/**/*.py")]
    assert len(sources) > 20
    offenders = [f"{p}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]  # fmt: skip
    assert offenders == []


def test_a_loader_is_resolved_on_first_use_only():
    family = ModelFamily("lazy", "", loader="diffsynth_nosuch_module:load")
    PluginManager.with_plugins(_Registers(family))  # registering imports nothing
    assert "diffsynth_nosuch_module" not in sys.modules
    with pytest.raises(PluginError, match="diffsynth_nosuch_module:load"):
        family.load(model_configs={})


def test_a_family_without_a_loader_is_one_clear_error(installed):
    installed(PluginManager.with_plugins(_Registers(ModelFamily("no-loader", ""))))
    with pytest.raises(PluginError, match="names no loader"):
        load_pipeline("no-loader", model_configs={})


# -- LoRA formats ---------------------------------------------------------------------------


def _reversed(state_dict: dict[str, Any], family: Any, kind: str) -> dict[str, Any]:
    """A third-party format: every key spelt backwards (easy to recognise in a file)."""
    return {key[::-1]: value for key, value in state_dict.items()}


class FormatPlugin:
    __name__ = "reversed-format"

    @hookimpl
    def diffsynth_register_lora_formats(self, register: Any) -> None:
        register(LoraFormat("reversed", "every key spelt backwards", _reversed))


def test_a_third_party_format_is_listed_and_used_by_lora_format(tmp_path):
    from safetensors import safe_open

    from diffsynth_core.testing import build_tiny, make_image_dataset, use_toy_plugin

    manager = use_toy_plugin(FormatPlugin())
    try:
        listing = CliRunner().invoke(build_cli(manager), ["plugins"])
        assert re.search(r"^reversed +reversed-format +write +every key spelt backwards",
                         listing.output, re.M), listing.output  # fmt: skip
        as_json = CliRunner().invoke(build_cli(manager), ["plugins", "--formats", "--json"])
        names = {f["name"]: f["plugin"] for f in json.loads(as_json.output)}
        assert names["reversed"] == "reversed-format" and names["diffusers"] == "builtin-formats"
        build_tiny(tmp_path / "tiny")
        result = CliRunner().invoke(build_cli(manager), [
            "train", "--model", "toy", "--model-path", str(tmp_path / "tiny"),
            "--dataset", str(make_image_dataset(tmp_path / "data", 2, 32)),
            "--output", str(tmp_path / "run"), "--max-steps", "1", "--height", "32",
            "--width", "32", "--lora-format", "reversed",
        ], env={"DIFFSYNTH_DEBUG": ""})  # fmt: skip
        assert result.exit_code == 0, result.output
        with safe_open(str(tmp_path / "run" / "final.safetensors"), "pt") as handle:
            keys = list(handle.keys())
        assert keys and all(k.startswith("thgiew.A_arol.") or k.startswith("thgiew.B_arol.")
                            for k in keys)  # fmt: skip
    finally:
        reset_plugin_manager(None)


def test_an_unknown_format_lists_the_installed_ones(manager):
    manager.register_object(FormatPlugin(), "reversed-format")
    with pytest.raises(UnknownFormatError) as error:
        manager.convert_state_dict({}, "nosuch")
    assert "'nosuch'" in str(error.value)
    assert "comfyui, diffusers, peft, reversed, wan" in str(error.value)
    with pytest.raises(UnknownFormatError, match="'kohya' is read-only"):
        manager.convert_state_dict({}, "kohya")


def test_a_format_name_registered_twice_breaks_the_second_plugin():
    class Again:
        __name__ = "again"

        @hookimpl
        def diffsynth_register_lora_formats(self, register: Any) -> None:
            register(LoraFormat("peft", "mine", _reversed))

    manager = PluginManager.with_plugins(Again())
    assert "'peft' is registered twice" in manager.plugins["again"].error
    assert manager.lora_formats["peft"].plugin == "builtin-formats"


LAYOUT = LoraLayout(components={"controlnet": "controlnet", "dit": "transformer"})
TWO_MODELS = ModelFamily("two", "", defaults=TrainingDefaults(
    remove_prefix_in_ckpt="pipe.controlnet.", export_prefix="controlnet"), lora_layout=LAYOUT)  # fmt: skip


def test_the_builtin_formats_follow_the_familys_layout(manager):
    state = {"b.lora_A.weight": 1, "pipe.dit.t.lora_A.weight": 2}
    assert manager.convert_state_dict(state, "diffusers", TWO_MODELS) == {
        "controlnet.b.lora_A.weight": 1, "transformer.t.lora_A.weight": 2}  # fmt: skip
    assert manager.convert_state_dict(state, "comfyui", TWO_MODELS) == {
        "controlnet.b.lora_A.weight": 1, "diffusion_model.t.lora_A.weight": 2}  # fmt: skip
    assert manager.convert_state_dict(state, "peft", TWO_MODELS) == {
        "b.lora_A.weight": 1, "t.lora_A.weight": 2}  # fmt: skip


def test_the_core_lora_modules_name_no_models_prefix():
    import torch

    from diffsynth_core.lora.files import normalize_lora_state_dict

    for module in ("inject.py", "files.py"):
        text = (ROOT / "diffsynth_core" / "lora" / module).read_text()
        for name in ("controlnet", "transformer_blocks", "pipe.dit", '"transformer.'):
            assert name not in text, f"{module} names {name}"
    lora = {"controlnet.b.lora_A.weight": torch.ones(1, 2), "controlnet.b.lora_B.weight": torch.ones(2, 1)}
    # the family's layout says what "controlnet." is; without it the prefix stays
    assert list(normalize_lora_state_dict(lora, family=TWO_MODELS)) == ["b.lora_A.weight", "b.lora_B.weight"]
    assert "controlnet.b.lora_A.weight" in normalize_lora_state_dict(lora)


# -- diffsynth_addhooks ---------------------------------------------------------------------


class Specs:
    hookspec = pluggy.HookspecMarker("diffsynth")

    @hookspec
    def diffsynth_register_colours(self, register: Any) -> None:
        """A hook one plugin defines for others."""


class Defines:
    __name__ = "defines"

    @hookimpl
    def diffsynth_addhooks(self, pluginmanager: Any) -> None:
        pluginmanager.add_hookspecs(Specs)


class Implements:
    __name__ = "implements"

    @hookimpl  # no optionalhook: hook names are checked once every plugin is registered
    def diffsynth_register_colours(self, register: Any) -> None:
        register("red")


class ImplementsWrongly:
    __name__ = "wrongly"

    @hookimpl
    def diffsynth_register_colours(self, register: Any, shade: Any) -> None:
        register(shade)


@pytest.mark.parametrize("order", ["implementer first", "definer first"])
def test_a_plugin_adds_its_own_hookspecs(order):
    plugins = [Implements(), Defines()] if order == "implementer first" else [Defines(), Implements()]
    manager = PluginManager.with_plugins(*plugins)
    assert manager.plugins["implements"].status == "ok"
    assert manager.plugins["defines"].hooks == ["diffsynth_addhooks"]
    colours: list[str] = []
    manager.hook.diffsynth_register_colours(register=colours.append)
    assert colours == ["red"]


def test_an_implementation_of_an_added_hook_is_validated():
    manager = PluginManager.with_plugins(ImplementsWrongly(), Defines())
    assert "shade" in manager.plugins["wrongly"].error
    assert manager.plugins["defines"].status == "ok"
    assert PluginManager.with_plugins(Implements()).plugins["implements"].error  # no spec at all


class _FamilyPlugin:
    __name__ = "fake"

    @hookimpl
    def diffsynth_register_models(self, register: Any) -> None:
        register(FAKE)


class _Registers:
    __name__ = "registers"

    def __init__(self, family: ModelFamily) -> None:
        self.family = family

    @hookimpl
    def diffsynth_register_models(self, register: Any) -> None:
        register(self.family)


def test_the_wan_format_refuses_a_family_without_the_wan_layout(manager):
    qwen, vace = manager.get_family("qwen-image"), manager.get_family("wan-vace")
    with pytest.raises(UnknownFormatError, match="'qwen-image' has no Wan layout"):
        manager.convert_state_dict({}, "wan", qwen)
    lora = {"blocks.0.attn1.to_q.lora_A.weight": 0}
    assert manager.convert_state_dict(lora, "wan", vace) == {
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight": 0
    }


def test_an_addhooks_that_raises_breaks_only_its_plugin():
    class Raises:
        __name__ = "raises"

        @hookimpl
        def diffsynth_addhooks(self, pluginmanager: Any) -> None:
            raise RuntimeError("no specs today")

    manager = PluginManager.with_plugins(Raises(), Defines(), Implements())
    assert "RuntimeError: no specs today" in manager.plugins["raises"].error
    assert not manager.pm.has_plugin("raises")
    assert manager.plugins["implements"].status == "ok"
