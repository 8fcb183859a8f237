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


def test_the_edit_families_conform(tmp_path: Path) -> None:
    """Qwen-Image-Edit and Edit-2509: the same checks, the inference given the edit image (a
    required column its ``__call__`` takes by name), small edit images (family inputs)."""
    from diffsynth_core.testing import check_family_conformance

    for family in ("qwen-image-edit", "qwen-image-edit-plus"):
        report = check_family_conformance(
            family, workdir=tmp_path / family, height=32, width=32,
            inputs={"edit_image_pixels": 4096, "edit_vl_pixels": 4096},
        )  # fmt: skip
        for rule in ("training step", "inference", "LoRA effect"):
            assert rule in report.passed, (family, rule)
        for fmt in ("diffusers", "comfyui", "peft"):
            assert f"LoRA merge ({fmt})" in report.passed, (family, fmt)
