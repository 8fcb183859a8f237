"""Two-process runs under ``accelerate launch`` on CPU over gloo (``ACCELERATE_USE_CPU=1``).

Tests marked ``distributed`` start real process groups and take minutes together: they run in
their own tox environment (``tox -e distributed``, which ``.ci/run`` runs), selected with
``pytest -m distributed``; a plain ``pytest`` skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

MARKER = "distributed"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: two-process accelerate runs (tox -e distributed, pytest -m {MARKER})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason=f"two-process run: `tox -e distributed` (pytest -m {MARKER})")
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            item.add_marker(skip)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    from diffsynth_core.testing import make_image_dataset

    return make_image_dataset(tmp_path / "data", 4, 32)


@pytest.fixture(scope="module")
def controlnet_tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny Qwen-Image + ControlNet model (the Qwen-Image layout with controlnet/)."""
    tiny = pytest.importorskip("diffsynth_controlnet.tiny")
    return tiny.build_tiny(tmp_path_factory.mktemp("controlnet-tiny"))


@pytest.fixture(autouse=True)
def fresh_accelerate_state(monkeypatch: pytest.MonkeyPatch) -> Any:
    """accelerate keeps process-wide singletons (and an FSDP Accelerator sets
    ACCELERATE_USE_FSDP); each test starts from a clean slate."""
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
