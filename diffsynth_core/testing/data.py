"""Small datasets written to disk for tests: coloured images plus a metadata.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

COLOURS = [
    ("red", (220, 30, 30)),
    ("green", (30, 200, 60)),
    ("blue", (40, 60, 220)),
    ("yellow", (230, 220, 40)),
    ("purple", (150, 40, 190)),
    ("cyan", (40, 210, 220)),
    ("orange", (240, 140, 20)),
    ("grey", (128, 128, 128)),
]


def make_image(colour: tuple[int, int, int], size: tuple[int, int], index: int = 0) -> Image.Image:
    """A flat-colour image with a lighter square, so images differ in shape as well as colour."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", (width, height), colour)
    offset = (index * 7) % max(1, width // 2)
    light = tuple(min(255, c + 60) for c in colour)
    ImageDraw.Draw(image).rectangle(
        [offset, offset, offset + width // 3, offset + height // 3], fill=light
    )
    return image


def make_image_dataset(
    folder: str | Path, n: int = 4, size: int | tuple[int, int] = 64, prompt_column: str = "prompt"
) -> Path:
    """Write ``n`` PNG images (``image_0.png`` ...) and ``metadata.csv`` (columns image, prompt).

    ``size`` is one side or ``(width, height)``. Returns the folder; the metadata file is
    ``folder / "metadata.csv"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = (size, size) if isinstance(size, int) else size
    rows = []
    for i in range(n):
        name, colour = COLOURS[i % len(COLOURS)]
        make_image(colour, size, i).save(folder / f"image_{i}.png")
        rows.append({"image": f"image_{i}.png", prompt_column: f"a {name} picture number {i}"})
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", prompt_column])
        writer.writeheader()
        writer.writerows(rows)
    return folder
