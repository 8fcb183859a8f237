"""The plugin manager: loading through entry points, attribution and broken-plugin isolation."""

from __future__ import annotations

import pytest
from plugin_fakes import family_plugin, load

from diffsynth_core import ModelFamily, hookimpl
from diffsynth_core.errors import UnknownLossError, UnknownModelError
from diffsynth_core.plugins import PluginManager, allowed_plugins, build_plugin_manager

BUILTINS = ["builtin-losses", "builtin-checkpoints", "builtin-formats", "builtin-units"]


def test_builtins_load_through_the_same_path():
    manager = load()
    assert list(manager.plugins) == BUILTINS
    assert all(
        p.status == "ok" and p.distribution == "diffsynth-core" for p in manager.plugins.values()
    )
    assert manager.plugins["builtin-losses"].hooks == ["diffsynth_register_losses"]
    assert "sft" in manager.losses and manager.losses["sft"].plugin == "builtin-losses"


def test_family_is_attributed_to_its_plugin_and_distribution(make_dist):
    make_dist("diffsynth-toy-a", {"toy-a": family_plugin("toy-a")}, version="2.3")
    family = load("toy-a").get_family("toy-a")
    assert (family.plugin, family.distribution, family.version) == (
        "toy-a",
        "diffsynth-toy-a",
        "2.3",
    )


def test_duplicate_family_names_both_distributions(make_dist):
    make_dist("diffsynth-first", {"first": family_plugin("toy")})
    make_dist("diffsynth-second", {"second": family_plugin("toy")})
    manager = load("first", "second")
    assert manager.plugins["first"].status == "ok"
    error = manager.plugins["second"].error
    assert "'toy'" in error and "diffsynth-first" in error and "diffsynth-second" in error
    assert manager.get_family("toy").distribution == "diffsynth-first"


BROKEN_IMPORT = """
raise ImportError("No module named 'heavy_dependency'")
"""

BAD_SIGNATURE = """
from diffsynth_core import hookimpl

@hookimpl
def diffsynth_register_models(register, colour):
    pass
"""

MISSPELT = """
from diffsynth_core import hookimpl

@hookimpl
def diffsynth_register_model(register):
    pass
"""

RAISES = """
from diffsynth_core import ModelFamily, hookimpl

@hookimpl
def diffsynth_register_models(register):
    register(ModelFamily(name="half", description="registered before the crash"))
    raise RuntimeError("config file missing")

@hookimpl
def diffsynth_checkpoint_name(kind, step):
    return "never.safetensors"
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (BROKEN_IMPORT, "ImportError: No module named 'heavy_dependency' (at "),
        (BAD_SIGNATURE, "colour"),
        (MISSPELT, "diffsynth_register_model match no diffsynth hook"),
        (RAISES, "RuntimeError: config file missing (at "),
    ],
    ids=["import-error", "bad-signature", "misspelt-hook", "registration-raises"],
)
def test_a_broken_plugin_is_recorded_and_the_others_work(make_dist, source, expected):
    make_dist("diffsynth-bad", {"bad": source})
    make_dist("diffsynth-good", {"good": family_plugin("good")})
    manager = load("bad", "good")
    assert manager.plugins["bad"].status == "broken"
    assert expected in manager.plugins["bad"].error
    assert "\n" not in manager.plugins["bad"].error
    assert manager.get_family("good").plugin == "good"
    assert [p.name for p in manager.broken()] == ["bad"]


def test_a_broken_plugin_contributes_nothing(make_dist):
    make_dist("diffsynth-bad", {"bad": RAISES})
    manager = load("bad")
    assert "half" not in manager.families
    assert not manager.pm.has_plugin("bad")
    name = manager.hook.diffsynth_checkpoint_name(kind="final", step=1, epoch=0, family=None)
    assert name == "final.safetensors"


def test_a_broken_plugins_family_fails_with_its_error(make_dist):
    make_dist("diffsynth-bad", {"bad": RAISES})
    with pytest.raises(UnknownModelError) as raised:
        load("bad").get_family("half")
    message = str(raised.value)
    assert "plugin 'bad'" in message and "config file missing" in message
    assert "diffsynth plugins" in message


def test_an_import_broken_plugin_is_named_for_its_distributions_family(make_dist):
    make_dist("diffsynth-toy-video", {"toy-video": BROKEN_IMPORT})
    with pytest.raises(UnknownModelError, match="plugin 'toy-video'.*heavy_dependency"):
        load("toy-video").get_family("toy-video")


def test_an_unknown_family_with_no_broken_plugin_lists_the_installed_ones():
    with pytest.raises(
        UnknownModelError, match=r"no model family 'nope' is installed \(installed: none\)"
    ):
        load().get_family("nope")


def test_two_entry_points_with_one_name_keep_the_first(make_dist):
    make_dist("diffsynth-one", {"toy": family_plugin("one")})
    make_dist("diffsynth-two", {"toy": family_plugin("two")})
    manager = load("toy")
    assert manager.plugins["toy"].status == "ok"
    assert [p.name for p in manager.broken()] == ["toy (diffsynth-two)"]
    assert len(manager.families) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", set()), (" a, b ,,", {"a", "b"})],
)
def test_allowed_plugins_parses_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("DIFFSYNTH_LOAD_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("DIFFSYNTH_LOAD_PLUGINS", value)
    assert allowed_plugins() == expected


def test_load_plugins_selects_entry_points_and_keeps_builtins(make_dist, monkeypatch):
    make_dist("diffsynth-a", {"toy-a": family_plugin("toy-a")})
    make_dist("diffsynth-b", {"toy-b": family_plugin("toy-b")})
    monkeypatch.setenv("DIFFSYNTH_LOAD_PLUGINS", "toy-b,typo")
    manager = build_plugin_manager()
    assert [f.name for f in manager.families] == ["toy-b"]
    assert "DIFFSYNTH_LOAD_PLUGINS" in manager.plugins["typo"].error
    monkeypatch.setenv("DIFFSYNTH_LOAD_PLUGINS", "")
    assert list(build_plugin_manager().plugins) == BUILTINS


def test_losses_are_registered_and_a_duplicate_breaks_the_second_plugin():
    class Extra:
        @hookimpl
        def diffsynth_register_losses(self, register):
            register("l1", lambda pipe, **inputs: 0.0, description="mean absolute error")

    class Clash:
        @hookimpl
        def diffsynth_register_losses(self, register):
            register("sft", lambda pipe, **inputs: 1.0)

    manager = PluginManager.with_plugins(Extra(), Clash())
    assert manager.get_loss("l1")(None) == 0.0
    assert manager.losses["l1"].description == "mean absolute error"
    assert "'sft' is registered twice" in manager.plugins["Clash"].error
    assert manager.losses["sft"].plugin == "builtin-losses"
    with pytest.raises(UnknownLossError, match="registered: l1, sft"):
        manager.get_loss("nope")


def test_register_rejects_what_is_not_a_family():
    class Wrong:
        @hookimpl
        def diffsynth_register_models(self, register):
            register({"name": "dict-family"})

    info = PluginManager.with_plugins(Wrong()).plugins["Wrong"]
    assert "expects a ModelFamily, got dict" in info.error


def test_an_optional_hook_without_a_spec_is_allowed():
    class Optional:
        @hookimpl(optionalhook=True)
        def diffsynth_future_hook(self):
            pass

        @hookimpl
        def diffsynth_register_models(self, register):
            register(ModelFamily(name="opt", description=""))

    manager = PluginManager.with_plugins(Optional())
    assert manager.plugins["Optional"].status == "ok"
    manager.pm.check_pending()
