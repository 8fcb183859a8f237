"""Make the small bundled FLUX.1 dataset: shapes on plain backgrounds, with captions.

    python examples/flux/make_data.py [OUTPUT_FOLDER]

Writes ``image_XX.png`` (64x64) and ``metadata.csv`` (columns ``image,prompt``) into
``examples/flux/data`` by default. Deterministic (PIL drawing only): the same files come out
every time, a few KB in all. The captions use words of the tiny preset's tokenizers.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
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
    ("circle", "red", "blue", (0.5, 0.5), "in the center"),
    ("square", "yellow", "black", (0.3, 0.3), "at the top left"),
    ("triangle", "green", "white", (0.5, 0.7), "near the bottom"),
    ("diamond", "white", "purple", (0.5, 0.5), "in the center"),
    ("ring", "orange", "blue", (0.3, 0.3), "at the top left"),
    ("cross", "black", "yellow", (0.5, 0.7), "near the bottom"),
)


def draw(shape: str, colour: str, background: str, where: tuple[float, float]) -> Image.Image:
    """One picture: a shape about a third of the image wide on a plain background."""
    image = Image.new("RGB", (SIZE, SIZE), COLOURS[background])
    cx, cy, r = where[0] * SIZE, where[1] * SIZE, SIZE // 5
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    canvas = ImageDraw.Draw(image)
    if shape == "circle":
        canvas.ellipse(box, fill=fill)
    elif shape == "ring":
        canvas.ellipse(box, outline=fill, width=max(2, r // 3))
    elif shape == "square":
        canvas.rectangle(box, fill=fill)
    elif shape == "diamond":
        canvas.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "cross":
        w = r // 3
        canvas.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
        canvas.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    else:
        canvas.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return image


def main(folder: Path) -> None:
    """Write the images and ``metadata.csv`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (shape, colour, background, where, place) in enumerate(SAMPLES):
        name = f"image_{i:02d}.png"
        draw(shape, colour, background, where).save(folder / name, optimize=True)
        rows.append((name, f"a {colour} {shape} {place}, a {background} background"))
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "prompt"))
        writer.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
