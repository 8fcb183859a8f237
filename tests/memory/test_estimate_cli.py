"""``diffsynth train --model qwen-image --estimate-memory --gpu-memory 24GiB`` (issue 13's
"done when"): exit 0, a settings line that fits, nothing written, nothing downloaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.main import build_cli


@pytest.mark.slow
def test_qwen_image_estimate_prints_settings_that_fit_24gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the estimate downloaded something")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    output = tmp_path / "run"
    args = [
        "train",
        "--model",
        "qwen-image",
        "--estimate-memory",
        "--gpu-memory",
        "24GiB",
        "--output",
        str(output),
    ]
    result = CliRunner().invoke(build_cli(), args)
    assert result.exit_code == 0, result.output
    text = result.output
    assert re.search(r"predicted peak\s+[0-9.]+ GiB", text), text
    fit = re.search(r"fit 24\.0 GiB \(predicted ([0-9.]+) GiB\):\n  (--base-precision .*)\n", text)
    assert fit is not None, text
    assert float(fit.group(1)) <= 24.0
    assert "--cache" in fit.group(2) and "--blocks-to-swap" in fit.group(2)
    assert not output.exists()
