"""Fixtures shared by every core test folder: the toy plugin and its tiny model on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def toy_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The process-wide plugin manager as built-ins + the toy family (no entry points)."""
    from diffsynth_core.plugins import reset_plugin_manager
    from diffsynth_core.testing import use_toy_plugin

    monkeypatch.setenv("DIFFSYNTH_LOAD_PLUGINS", "")
    yield use_toy_plugin()
    reset_plugin_manager(None)


@pytest.fixture(scope="session")
def tiny_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy family's tiny weights, written once per session in the repository layout."""
    from diffsynth_core.testing import build_tiny

    folder = tmp_path_factory.mktemp("tiny-toy")
    build_tiny(folder)
    return folder
