"""A family's aliases: ``--model flux`` is ``flux-dev``; an alias taken twice is an error."""

from __future__ import annotations

import pytest

from diffsynth_core.errors import DuplicateFamilyError, UnknownModelError
from diffsynth_core.registry import FamilyRegistry, ModelFamily


def _registry(*families: ModelFamily) -> FamilyRegistry:
    registry = FamilyRegistry()
    for number, family in enumerate(families):
        registry.add(family, plugin=f"p{number}", distribution=f"d{number}", version="1")
    return registry


def test_an_alias_finds_its_family() -> None:
    registry = _registry(ModelFamily("flux-dev", "dev", aliases=("flux",)), ModelFamily("other", "x"))
    assert registry.get("flux").name == "flux-dev"
    assert registry.get("flux-dev").plugin == registry.get("flux").plugin == "p0"
    assert [f.name for f in registry] == ["flux-dev", "other"]  # listed once, by its name
    with pytest.raises(UnknownModelError):
        registry.get("fluxx")


@pytest.mark.parametrize(
    "second",
    [ModelFamily("flux", "a family named like the alias"), ModelFamily("b", "b", aliases=("flux",))],
    ids=["name", "alias"],
)
def test_an_alias_taken_twice_names_both_owners(second: ModelFamily) -> None:
    with pytest.raises(DuplicateFamilyError, match="registered twice: by .*p0.* and by .*p1"):
        _registry(ModelFamily("flux-dev", "dev", aliases=("flux",)), second)


def test_the_installed_flux_plugin_answers_to_flux() -> None:
    pytest.importorskip("diffsynth_flux")
    from diffsynth_core.plugins import get_plugin_manager

    assert get_plugin_manager().get_family("flux").name == "flux-dev"
