"""The core's conformance check on the ``qwen-image`` family (every first-party family runs it).

It loads the tiny preset through ``load_pipeline``, takes one training step, generates, and
round-trips a LoRA through every built-in export format (diffusers, comfyui, peft), each file
merged into a fresh pipeline predicting what the LoRA layers predict.
"""

from __future__ import annotations

from pathlib import Path


def test_qwen_image_conforms(tmp_path: Path) -> None:
    from diffsynth_core.testing import check_family_conformance

    report = check_family_conformance("qwen-image", workdir=tmp_path, height=32, width=32)
    for rule in ("training step", "inference", "LoRA effect"):
        assert rule in report.passed
    for fmt in ("diffusers", "comfyui", "peft"):
        assert f"LoRA export ({fmt})" in report.passed and f"LoRA merge ({fmt})" in report.passed
