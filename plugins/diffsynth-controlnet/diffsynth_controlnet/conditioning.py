"""Control images and masks brought to the target image's size, and their per-image settings.

A control image must show the same scene geometry as the target, so it goes through the same
resize rule as training images (:func:`diffsynth_core.data.images.crop_and_resize`: scale to
cover, centre-crop) straight to the target's final size. That keeps the two aligned whenever
their aspect ratios agree. When they do not, the centre crops would cut different regions and
the control would be shifted against the target, so a mismatch is refused: the crop may remove
at most 2% of a side or one 16-pixel step (the rounding of the resize rule), whichever is more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from diffsynth_core import BadSampleError, ConfigError, crop_and_resize

ASPECT_TOLERANCE = 0.02
ROUNDING_PIXELS = 16


class ControlImageMismatchError(BadSampleError):
    """A control image (or mask) whose aspect ratio does not match the target image's."""


def _crop_overhang(size: tuple[int, int], width: int, height: int) -> tuple[float, float]:
    """Pixels the cover-and-centre-crop of an image of ``size`` cuts off, per side pair."""
    scale = max(width / size[0], height / size[1])
    return size[0] * scale - width, size[1] * scale - height


def fit_to_target(
    image: Image.Image, width: int, height: int, what: str = "control image"
) -> Image.Image:
    """``image`` resized by the resize rule to exactly ``width`` x ``height``; refused if the
    crop would cut more than the tolerance (see the module docstring)."""
    over_w, over_h = _crop_overhang(image.size, width, height)
    if over_w > max(ASPECT_TOLERANCE * width, ROUNDING_PIXELS) or over_h > max(
        ASPECT_TOLERANCE * height, ROUNDING_PIXELS
    ):
        raise ControlImageMismatchError(
            f"the {what} is {image.width}x{image.height} but the target image is {width}x{height}: "
            "their aspect ratios differ, so the control would not line up with the image. "
            "Make the control image from the target image itself (diffsynth controlnet prepare), "
            "or crop both to the same aspect ratio."
        )
    return crop_and_resize(image.convert("RGB"), width, height)


def as_image_list(value: Any) -> list[Image.Image]:
    """A PIL image or a list of them -> a list (None -> empty)."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, Image.Image):
            raise ConfigError(f"expected a PIL image, got {type(item).__name__}")
    return items


def as_floats(value: Any, count: int, name: str) -> list[float]:
    """One float per control image from a number, a list, or ``"0.5,0.8"`` text (a single
    value applies to every image)."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{name} must be a number or comma-separated numbers, not {value!r}"
        ) from error
    if len(floats) == 1:
        return floats * count
    if len(floats) != count:
        raise ConfigError(f"{name} has {len(floats)} values for {count} control images")
    return floats


@dataclass(frozen=True)
class ControlSettings:
    """How one control image acts: which ControlNet, how strongly, during which steps."""

    net: int
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def factor(self, step: int | None, num_steps: int) -> float:
        """The scale at denoising step ``step`` of ``num_steps``: diffusers' keep rule (active
        unless the step begins before ``start`` or ends after ``end``); training (``step`` is
        None) always applies the plain scale."""
        if step is None:
            return self.scale
        outside = step / num_steps < self.start or (step + 1) / num_steps > self.end
        return 0.0 if outside else self.scale


def control_settings(
    num_images: int, num_nets: int, scale: Any = 1.0, start: Any = 0.0, end: Any = 1.0
) -> list[ControlSettings]:
    """Settings for each control image: one image per ControlNet, or (a Union ControlNet)
    every image through the single ControlNet, residuals summed as diffusers' Multi model does."""
    if num_nets not in (1, num_images):
        raise ConfigError(
            f"{num_images} control images for {num_nets} ControlNets: give one image per "
            "ControlNet, or several images to a single (Union) ControlNet"
        )
    scales = as_floats(scale, num_images, "controlnet_scale")
    starts = as_floats(start, num_images, "control_start")
    ends = as_floats(end, num_images, "control_end")
    for s, e in zip(starts, ends, strict=True):
        if not 0.0 <= s < e <= 1.0:
            raise ConfigError(f"control_start {s} / control_end {e}: need 0 <= start < end <= 1")
    nets = [0] * num_images if num_nets == 1 else list(range(num_images))
    return [
        ControlSettings(n, sc, s, e) for n, sc, s, e in zip(nets, scales, starts, ends, strict=True)
    ]


def binarize_mask(mask: Image.Image) -> Image.Image:
    """A mask as diffusers' mask processor makes it: grey, then 0 below half, 255 above."""
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def settings_summary(settings: Sequence[ControlSettings]) -> str:
    """One line for logs: ``net0 x1.0 [0.0-1.0]; ...``."""
    return "; ".join(f"net{s.net} x{s.scale} [{s.start}-{s.end}]" for s in settings)
