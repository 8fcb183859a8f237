"""``diffsynth train --base-precision`` as a user runs it: a real process, what it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from .conftest import train_in_subprocess

# what torchao, torch and peft print on import or on wrapping a quantized layer, which says
# nothing to a user (GPU extensions a CPU build lacks, deprecations, in-place merging)
NOISE = ("Failed to load", "register_constant", "Unable to import `torchao`", "TorchaoLoraLinear")


@pytest.mark.slow
def test_an_int8_run_prints_what_it_quantized_and_no_library_noise(
    qwen_tiny: Path, images: Path, tmp_path: Path
) -> None:
    done = train_in_subprocess(qwen_tiny, images, tmp_path / "run", "--max-steps", "2",
                               "--base-precision", "int8", "--save-dtype", "bf16")  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "base precision int8: dit: 28 linear layers, 1.3 -> 0.5 MiB" in output
    assert [n for n in NOISE if n in output] == []
    saved = load_file(str(tmp_path / "run" / "final.safetensors"))
    assert saved and {str(v.dtype) for v in saved.values()} == {"torch.bfloat16"}
