"""Fixtures for the platform tests: fake installed distributions and fresh plugin managers."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_fakes import write_dist

from diffsynth_core.plugins import PluginManager, reset_plugin_manager

MakeDist = Callable[..., Path]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty site folder on sys.path; the modules imported from it are forgotten after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if str(folder) in (getattr(sys.modules[name], "__file__", None) or ""):
            del sys.modules[name]


@pytest.fixture
def make_dist(site: Path) -> MakeDist:
    """``make_dist("diffsynth-toy", {"toy": SOURCE})`` writes a fake installed distribution."""

    def make(dist: str, plugins: dict[str, str], version: str = "1.0") -> Path:
        write_dist(site, dist, plugins, version)
        importlib.invalidate_caches()
        return site

    return make


@pytest.fixture
def installed() -> Iterator[Callable[[PluginManager], PluginManager]]:
    """Make a manager the process-wide one (what the CLI and pipelines use) for one test."""

    def install(manager: PluginManager) -> PluginManager:
        reset_plugin_manager(manager)
        return manager

    yield install
    reset_plugin_manager(None)
