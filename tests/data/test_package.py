"""The data package stays cheap to import: torch loads only with the dataset."""

from __future__ import annotations

import subprocess
import sys

import pytest

import diffsynth_core.data as data


def test_exports() -> None:
    assert set(data.__all__) <= set(dir(data)) | set(data._EXPORTS)
    for name in data.__all__:
        assert getattr(data, name).__name__ == name
    with pytest.raises(AttributeError):
        data.nothing  # noqa: B018


def test_validation_and_import_do_not_load_torch() -> None:
    code = (
        "import sys, diffsynth_core, diffsynth_core.data as d; d.validate; d.BadSampleLog; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
