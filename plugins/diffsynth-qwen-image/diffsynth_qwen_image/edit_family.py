"""The ``qwen-image-edit`` and ``qwen-image-edit-plus`` families (instruction editing).

Imported by every ``diffsynth`` command, so it imports no torch and no diffusers. Both share
Qwen-Image's DiT class, training defaults, LoRA layout and blocks; they add the Qwen2.5-VL
``processor/`` component, the edit image columns and the edit options.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from diffsynth_core import ComponentFiles, FamilyOption, ModelFamily

from .family import qwen_image_family

EDIT, EDIT_PLUS = "qwen-image-edit", "qwen-image-edit-plus"
EDIT_REPO = "Qwen/Qwen-Image-Edit"
EDIT_PLUS_REPO = "Qwen/Qwen-Image-Edit-2511"  # -2509 loads the same way (--model-path)

VAE_PIXELS_OPTION = FamilyOption(
    "edit_image_pixels",
    "int",
    1024 * 1024,
    help="pixel area the edit images are resized to for the VAE (their aspect kept; "
    "diffusers' pipelines: 1048576). Lower it to train on small edit images",
)
VL_PIXELS_OPTION = FamilyOption(
    "edit_vl_pixels",
    "int",
    384 * 384,
    help="pixel area of each edit image given to Qwen2.5-VL's vision tower (diffusers: 147456)",
)


def _edit_image_option(limit: int) -> FamilyOption:
    many = " (repeat the flag, or comma-separate, for up to 3)" if limit > 1 else ""
    return FamilyOption("edit_image", "images", help=f"the image to edit{many}", command="generate")


def build_tiny_edit(folder: Path) -> None:
    """Write the tiny Qwen-Image-Edit preset (see :mod:`diffsynth_qwen_image.edit_tiny`)."""
    from .edit_tiny import build_tiny_edit as build

    build(folder)


def build_tiny_edit_plus(folder: Path) -> None:
    """Write the tiny Qwen-Image-Edit-2511 preset."""
    from .edit_tiny import build_tiny_edit_plus as build

    build(folder)


def _edit_family(plus: bool) -> ModelFamily:
    base = qwen_image_family()
    repo = EDIT_PLUS_REPO if plus else EDIT_REPO
    files = {
        name: ComponentFiles(repo, f.origin_file_pattern) for name, f in base.model_files.items()
    }
    files["processor"] = ComponentFiles(repo, "processor/")
    columns = (
        ("image", "edit_image", "edit_image_2", "edit_image_3") if plus else ("image", "edit_image")
    )
    defaults = dataclasses.replace(
        base.defaults,
        data_file_keys=columns,
        required_columns=("image", "prompt", "edit_image"),
    )
    options = (_edit_image_option(3 if plus else 1), VAE_PIXELS_OPTION)
    return dataclasses.replace(
        base,
        name=EDIT_PLUS if plus else EDIT,
        description=(
            "Qwen-Image-Edit-2509/2511: instruction editing from 1-3 images (diffusers classes)"
            if plus
            else "Qwen-Image-Edit: instruction editing of one image (diffusers classes)"
        ),
        model_files=files,
        defaults=defaults,
        build_tiny=build_tiny_edit_plus if plus else build_tiny_edit,
        loader="diffsynth_qwen_image.edit_pipeline:load_qwen_image_edit_pipeline",
        options=options + ((VL_PIXELS_OPTION,) if plus else ()),
    )


def qwen_image_edit_family() -> ModelFamily:
    """``qwen-image-edit``: Qwen/Qwen-Image-Edit, one edit image."""
    return _edit_family(plus=False)


def qwen_image_edit_plus_family() -> ModelFamily:
    """``qwen-image-edit-plus``: Qwen/Qwen-Image-Edit-2511 (or -2509), one to three images."""
    return _edit_family(plus=True)
