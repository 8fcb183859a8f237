"""Make the small bundled dataset: coloured shapes on plain backgrounds, with captions.

    python examples/qwen_image/make_data.py [OUTPUT_FOLDER]

Writes ``image_XX.png`` and ``metadata.csv`` (columns ``image,prompt``) into
``examples/qwen_image/data`` by default. Deterministic: no randomness, only PIL drawing, so the
same files come out every time (about 10 KB in all).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 96
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 210),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 170),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# (shape, colour, background, where): where is the shape's centre as fractions of the size
SAMPLES = (
    ("circle", "red", "blue", (0.5, 0.5)),
    ("square", "yellow", "black", (0.5, 0.5)),
    ("triangle", "green", "white", (0.5, 0.55)),
    ("circle", "white", "purple", (0.3, 0.3)),
    ("square", "blue", "orange", (0.7, 0.7)),
    ("triangle", "red", "yellow", (0.5, 0.5)),
    ("circle", "orange", "green", (0.7, 0.35)),
    ("square", "purple", "white", (0.35, 0.65)),
    ("triangle", "black", "orange", (0.5, 0.5)),
    ("circle", "green", "black", (0.5, 0.7)),
)
PLACES = {(0.5, 0.5): "in the center", (0.5, 0.55): "in the center", (0.3, 0.3): "at the top left"}


def article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def describe(where: tuple[float, float]) -> str:
    """Words for where the shape sits."""
    if where in PLACES:
        return PLACES[where]
    vertical = "top" if where[1] < 0.5 else "bottom" if where[1] > 0.5 else "middle"
    horizontal = "left" if where[0] < 0.5 else "right" if where[0] > 0.5 else "center"
    return f"at the {vertical} {horizontal}"


def draw(shape: str, colour: str, background: str, where: tuple[float, float]) -> Image.Image:
    """One picture: a shape about a third of the image wide on a plain background."""
    image = Image.new("RGB", (SIZE, SIZE), COLOURS[background])
    cx, cy, r = where[0] * SIZE, where[1] * SIZE, SIZE // 5
    box = (cx - r, cy - r, cx + r, cy + r)
    canvas = ImageDraw.Draw(image)
    if shape == "circle":
        canvas.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        canvas.rectangle(box, fill=COLOURS[colour])
    else:
        canvas.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=COLOURS[colour])
    return image


def main(folder: Path) -> None:
    """Write the images and ``metadata.csv`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (shape, colour, background, where) in enumerate(SAMPLES):
        name = f"image_{i:02d}.png"
        draw(shape, colour, background, where).save(folder / name, optimize=True)
        caption = f"{article(colour)} {shape} {describe(where)}, {article(background)} background"
        rows.append((name, caption))
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "prompt"))
        writer.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
