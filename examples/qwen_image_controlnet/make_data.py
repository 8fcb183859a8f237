"""Make the bundled ControlNet dataset: simple drawn scenes, their Canny maps, captions.

    python examples/qwen_image_controlnet/make_data.py [OUTPUT_FOLDER]

Writes ``image_XX.png`` (64x64), ``control/canny/image_XX.png`` and ``metadata.csv`` (columns
``image,prompt,control_image``) into ``examples/qwen_image_controlnet/data`` by default. The
edge maps are made by the same code as ``diffsynth controlnet prepare --kind canny``.
Deterministic: PIL drawing only, no randomness, so the same bytes come out every time.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 210),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# (scene, foreground, background); each scene has a different outline for the ControlNet
SAMPLES = (
    ("house", "red", "white"),
    ("two circles", "yellow", "black"),
    ("stripes", "white", "green"),
    ("diamond", "green", "white"),
    ("ring", "blue", "yellow"),
    ("steps", "black", "yellow"),
)


def _house(canvas: ImageDraw.ImageDraw, colour: tuple[int, int, int]) -> None:
    canvas.rectangle((16, 30, 48, 54), fill=colour)
    canvas.polygon([(12, 30), (32, 10), (52, 30)], fill=colour)


def _two_circles(canvas: ImageDraw.ImageDraw, colour: tuple[int, int, int]) -> None:
    canvas.ellipse((6, 18, 30, 42), fill=colour)
    canvas.ellipse((34, 18, 58, 42), fill=colour)


def _stripes(canvas: ImageDraw.ImageDraw, colour: tuple[int, int, int]) -> None:
    for x in range(6, SIZE, 16):
        canvas.rectangle((x, 6, x + 7, 57), fill=colour)


def _diamond(canvas: ImageDraw.ImageDraw, colour: tuple[int, int, int]) -> None:
    canvas.polygon([(32, 6), (58, 32), (32, 58), (6, 32)], fill=colour)


def _ring(canvas: ImageDraw.ImageDraw, colour: tuple[int, int, int]) -> None:
    canvas.ellipse((8, 8, 56, 56), outline=colour, width=8)


def _steps(canvas: ImageDraw.ImageDraw, colour: tuple[int, int, int]) -> None:
    for i in range(4):
        canvas.rectangle((8 + 12 * i, 56 - 12 * (i + 1), 20 + 12 * i, 56), fill=colour)


SCENES = {
    "house": _house, "two circles": _two_circles, "stripes": _stripes,
    "diamond": _diamond, "ring": _ring, "steps": _steps,
}  # fmt: skip


def draw(scene: str, colour: str, background: str) -> Image.Image:
    """One picture: ``scene`` in ``colour`` on a plain ``background``."""
    image = Image.new("RGB", (SIZE, SIZE), COLOURS[background])
    SCENES[scene](ImageDraw.Draw(image), COLOURS[colour])
    return image


def write_images(folder: Path) -> list[tuple[str, str]]:
    """The images into ``folder``; their (file, caption) rows."""
    rows = []
    for i, (scene, colour, background) in enumerate(SAMPLES):
        name = f"image_{i:02d}.png"
        draw(scene, colour, background).save(folder / name, optimize=True)
        rows.append((name, f"a {colour} {scene} on a {background} background"))
    return rows


def main(folder: Path) -> None:
    """Write images, Canny maps and ``metadata.csv`` into ``folder``."""
    from diffsynth_controlnet.kinds import builtin_canny
    from diffsynth_controlnet.prepare import prepare_dataset

    folder.mkdir(parents=True, exist_ok=True)
    rows = write_images(folder)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "metadata.csv"
        with open(plain, "w", newline="") as f:
            csv.writer(f).writerows([("image", "prompt"), *rows])
        prepare_dataset(
            folder,
            "canny",
            builtin_canny,
            metadata=plain,
            output_metadata=folder / "metadata.csv",
            overwrite=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
