"""The numpy Canny detector: thin, well-placed edges; thresholds and hysteresis behave."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffsynth_controlnet.canny import (
    canny,
    canny_edges,
    gaussian_kernel,
    hysteresis,
    non_max_suppression,
    sobel,
)


def box_image(fill: int = 230, background: int = 20) -> Image.Image:
    image = Image.new("RGB", (64, 48), (background,) * 3)
    ImageDraw.Draw(image).rectangle((16, 12, 47, 35), fill=(fill,) * 3)
    return image


def test_edges_of_a_box_are_one_pixel_wide_on_its_border() -> None:
    edges = canny_edges(box_image())
    rows, cols = np.nonzero(edges)
    # every edge pixel sits on the box outline, within one pixel
    near_x = (np.abs(cols - 16) <= 1) | (np.abs(cols - 47) <= 1)
    near_y = (np.abs(rows - 12) <= 1) | (np.abs(rows - 35) <= 1)
    assert (near_x | near_y).all()
    # one pixel wide: a scan line through the middle crosses exactly two edges
    assert edges[24].sum() == 2 and edges[:, 32].sum() == 2
    assert edges[24, 15:18].any() and edges[24, 46:49].any()  # at the left and right borders


def test_flat_image_has_no_edges_and_output_is_black_and_white() -> None:
    assert not canny_edges(Image.new("RGB", (32, 32), (128, 128, 128))).any()
    out = canny(box_image())
    assert out.mode == "RGB" and out.size == (64, 48)
    assert set(np.unique(np.asarray(out))) == {0, 255}


def test_low_contrast_needs_lower_thresholds() -> None:
    faint = box_image(fill=60, background=20)  # a weak step: below the default high threshold
    assert not canny_edges(faint).any()
    assert canny_edges(faint, low=20, high=40).any()
    with pytest.raises(ValueError, match="low threshold"):
        canny_edges(faint, low=50, high=10)


def test_hysteresis_keeps_weak_edges_connected_to_strong_ones() -> None:
    strong = np.zeros((5, 7), dtype=bool)
    weak = np.zeros((5, 7), dtype=bool)
    strong[2, 0] = True
    weak[2, 0:4] = True  # a weak run touching the strong pixel
    weak[4, 6] = True  # an isolated weak pixel
    kept = hysteresis(strong, weak)
    assert kept[2, 0:4].all() and not kept[4, 6]


def test_sobel_and_suppression_on_a_vertical_step() -> None:
    step = np.zeros((5, 6), dtype=np.float32)
    step[:, 3:] = 100.0
    gx, gy = sobel(step)
    assert (gy == 0).all() and gx[2, 2] == gx[2, 3] == 400.0
    thin = non_max_suppression(np.hypot(gx, gy), gx, gy)
    assert (thin[:, 2] == 400).all() and (thin[:, 3] == 0).all()  # one of the two ridge pixels


def test_gaussian_kernel_is_normalised_and_symmetric() -> None:
    kernel = gaussian_kernel(1.0)
    assert (
        kernel.sum() == pytest.approx(1.0)
        and np.allclose(kernel, kernel[::-1])
        and len(kernel) == 7
    )
