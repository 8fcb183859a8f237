"""The Canny edge detector in numpy (no OpenCV): blur, Sobel, thinning, two thresholds, linking.

The steps are the textbook ones (Canny 1986) and the defaults those of the ControlNet canny
annotators (``cv2.Canny(image, 100, 200)`` on an 8-bit grey image):

1. Gaussian blur to suppress noise (separable kernel, ``sigma`` 1.0 by default);
2. Sobel gradients; magnitude ``sqrt(gx^2 + gy^2)`` on the 0-255 scale;
3. non-maximum suppression: keep a pixel only where it is the largest along its gradient
   direction (quantised to 0, 45, 90, 135 degrees), which thins edges to one pixel;
4. double threshold: ``>= high`` is a strong edge, ``>= low`` a weak one;
5. hysteresis: keep weak edges connected (8-neighbourhood) to a strong edge.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)


def to_grey(image: Image.Image) -> np.ndarray:
    """An image as a float32 (H, W) array of ITU-R 601 luma on the 0-255 scale."""
    return np.asarray(image.convert("L"), dtype=np.float32)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian kernel reaching 3 sigma each side."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _convolve_rows(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every row with ``kernel``; borders are reflected so edges are not invented."""
    radius = len(kernel) // 2
    padded = np.pad(array, ((0, 0), (radius, radius)), mode="reflect")
    out = np.zeros_like(array)
    for offset, weight in enumerate(kernel):
        out += weight * padded[:, offset : offset + array.shape[1]]
    return out


def gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (rows, then columns)."""
    if sigma <= 0:
        return array
    kernel = gaussian_kernel(sigma)
    return _convolve_rows(_convolve_rows(array, kernel).T, kernel).T


def _correlate3(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 correlation with replicated borders (so image borders give no gradient)."""
    padded = np.pad(array, 1, mode="edge")
    h, w = array.shape
    out = np.zeros_like(array)
    for dy in range(3):
        for dx in range(3):
            if kernel[dy, dx]:
                out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


def sobel(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical Sobel derivatives (x grows rightwards, y downwards)."""
    return _correlate3(array, SOBEL_X), _correlate3(array, SOBEL_X.T)


def _shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``array[y + dy, x + dx]`` at every (y, x), zero outside the image."""
    padded = np.pad(array, 1)
    h, w = array.shape
    return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


# The two neighbours along each quantised gradient direction, as (dy, dx) offsets.
_DIRECTION_NEIGHBOURS = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}


def non_max_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``magnitude`` where it is a local maximum along the gradient direction, else 0."""
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    direction = (np.round(angle / 45.0).astype(np.int64)) % 4
    keep = np.zeros(magnitude.shape, dtype=bool)
    for index, (dy, dx) in _DIRECTION_NEIGHBOURS.items():
        # ">=" on one side and ">" on the other keeps exactly one pixel of a flat-topped ridge
        is_max = (magnitude >= _shifted(magnitude, dy, dx)) & (
            magnitude > _shifted(magnitude, -dy, -dx)
        )
        keep |= (direction == index) & is_max
    return np.where(keep, magnitude, 0.0)


def _dilate8(mask: np.ndarray) -> np.ndarray:
    """A boolean mask grown by one pixel in all 8 directions."""
    grown = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                grown |= _shifted(mask, dy, dx)
    return grown


def hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Strong edges plus every weak edge 8-connected to one (grown until nothing changes)."""
    edges = strong & weak
    candidates = weak | strong
    while True:
        grown = _dilate8(edges) & candidates
        if np.array_equal(grown, edges):
            return edges
        edges = grown


def canny_edges(
    image: Image.Image, low: float = 100.0, high: float = 200.0, sigma: float = 1.0
) -> np.ndarray:
    """The Canny edge map of ``image`` as a boolean (H, W) array."""
    if low > high:
        raise ValueError(f"canny: low threshold {low} is above the high threshold {high}")
    grey = gaussian_blur(to_grey(image), sigma)
    gx, gy = sobel(grey)
    thin = non_max_suppression(np.hypot(gx, gy), gx, gy)
    return hysteresis(thin >= high, thin >= low)


def canny(
    image: Image.Image, low: float = 100.0, high: float = 200.0, sigma: float = 1.0
) -> Image.Image:
    """The Canny edge map as an RGB image, white edges on black (what ControlNets are fed)."""
    edges = canny_edges(image, low=low, high=high, sigma=sigma)
    return Image.fromarray(np.where(edges, 255, 0).astype(np.uint8), mode="L").convert("RGB")
