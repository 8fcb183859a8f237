"""Operators: the resize rule, chaining, path containment, image lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from diffsynth_core.data.files import error_kind
from diffsynth_core.data.images import target_size
from diffsynth_core.data.operators import (
    Chain,
    ImageCropAndResize,
    LoadImage,
    LoadImageList,
    ToAbsolutePath,
    find_operator,
)
from diffsynth_core.errors import BadSampleError, ConfigError

from .media import solid


@pytest.mark.parametrize(
    ("size", "max_pixels", "expected"),
    [
        ((4000, 3000), 1024 * 1024, (1168, 880)),  # scaled down, floored to 16
        ((100, 50), 1024 * 1024, (96, 48)),  # small: never upscaled, only floored
        ((1024, 1024), 1024 * 1024, (1024, 1024)),  # exactly at the limit: unchanged
        ((1025, 1023), 1024 * 1024, (1024, 1008)),
        ((5000, 100), 256 * 256, (1808, 32)),  # extreme aspect ratio kept
    ],
)
def test_target_size_rule(
    size: tuple[int, int], max_pixels: int, expected: tuple[int, int]
) -> None:
    w, h = target_size(*size, max_pixels=max_pixels)
    assert (w, h) == expected
    assert w % 16 == 0 and h % 16 == 0
    assert w <= size[0] and h <= size[1]
    assert w * h <= max_pixels


def test_target_size_properties_over_many_sizes() -> None:
    for w in range(32, 3000, 97):
        for h in range(16, 3000, 89):
            tw, th = target_size(w, h, max_pixels=512 * 512, width_division_factor=32)
            assert tw % 32 == 0 and th % 16 == 0
            assert tw <= w and th <= h and tw * th <= 512 * 512


def test_target_size_fixed_and_too_small() -> None:
    assert target_size(4000, 10, height=512, width=256) == (256, 512)
    with pytest.raises(BadSampleError, match="at least 16x16"):
        target_size(15, 400)


def test_fixed_size_covers_then_center_crops() -> None:
    image = Image.new("RGB", (300, 100), "red")
    image.paste((0, 0, 255), (100, 0, 200, 100))  # blue middle third
    out = ImageCropAndResize(height=64, width=64)(image)
    assert out.size == (64, 64)
    assert out.getpixel((32, 32)) == (0, 0, 255)  # the crop kept the center
    assert out.getpixel((1, 32))[2] > 200 and out.getpixel((62, 32))[2] > 200


def test_dynamic_resize_applies_the_rule() -> None:
    out = ImageCropAndResize(max_pixels=64 * 64)(Image.new("RGB", (200, 100)))
    assert out.size == target_size(200, 100, max_pixels=64 * 64) == (80, 32)


def test_resize_config_errors() -> None:
    with pytest.raises(ConfigError, match="multiple of 16x16"):
        ImageCropAndResize(height=500, width=512)
    with pytest.raises(ConfigError, match="both height and width"):
        ImageCropAndResize(height=512)


def test_chain_composes_and_flattens(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (100, 60), (1, 2, 3))
    resize = ImageCropAndResize(height=32, width=32)
    chain = ToAbsolutePath(tmp_path) >> LoadImage() >> resize >> (lambda im: im.size)
    assert isinstance(chain, Chain) and len(chain.operators) == 4
    assert chain("a.png") == (32, 32)
    assert find_operator(chain, ImageCropAndResize) is resize


def test_paths_inside_base_are_allowed(tmp_path: Path) -> None:
    file = solid(tmp_path / "sub" / "a.png")
    to_abs = ToAbsolutePath(tmp_path)
    assert to_abs("sub/a.png") == str(file.resolve())
    assert to_abs(str(file)) == str(file.resolve())  # absolute, but inside
    assert to_abs("sub/../sub/a.png") == str(file.resolve())


def test_paths_leaving_base_are_refused(tmp_path: Path) -> None:
    base = tmp_path / "data"
    outside = solid(tmp_path / "secret.png")
    os.symlink(outside, solid(base / "x.png").parent / "link.png")
    to_abs = ToAbsolutePath(base)
    for value in ("../secret.png", str(outside), "link.png"):
        with pytest.raises(BadSampleError, match="outside the dataset folder") as info:
            to_abs(value)
        assert error_kind(info.value) == "outside dataset"


def test_empty_cells_are_bad_samples(tmp_path: Path) -> None:
    for value in ("", "  ", None, float("nan")):
        with pytest.raises(BadSampleError, match="no file path"):
            ToAbsolutePath(tmp_path)(value)


@pytest.mark.parametrize("value", ['["a.png", "b.png"]', "a.png, b.png", ["a.png", "b.png"]])
def test_image_list_formats(tmp_path: Path, value: object) -> None:
    solid(tmp_path / "a.png", (16, 16), (255, 0, 0))
    solid(tmp_path / "b.png", (32, 16), (0, 255, 0))
    images = LoadImageList(ToAbsolutePath(tmp_path) >> LoadImage())(value)
    assert [(im.size, im.getpixel((0, 0))) for im in images] == [
        ((16, 16), (255, 0, 0)),
        ((32, 16), (0, 255, 0)),
    ]
