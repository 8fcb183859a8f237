"""Make the small bundled edit dataset: shapes recoloured or moved, with instructions.

    python examples/qwen_image_edit/make_data.py [OUTPUT_FOLDER]

Writes into ``examples/qwen_image_edit/data`` by default:

- ``metadata.csv`` (columns ``image,edit_image,prompt``): ``edit_XX.png`` is the picture to
  edit, ``target_XX.png`` the result the instruction asks for (both families);
- ``metadata_two_images.csv`` (``image,edit_image,edit_image_2,prompt``): the shape of picture 1
  given the colour of the swatch in picture 2 (``qwen-image-edit-plus``, one to three images);
- ``sample_prompts.txt``: prompts for sample images during training, each a JSON line with its
  edit image.

Deterministic (PIL drawing only): the same files come out every time (about 20 KB).
"""

from __future__ import annotations

import csv
import json
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
    "white": (245, 245, 245),
}
WHERE = {"left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7)}
# (shape, colour, background, where) before -> the edit: ("colour", new) or ("move", where)
EDITS = (
    (("circle", "red", "blue", "left"), ("colour", "green")),
    (("square", "yellow", "purple", "right"), ("colour", "white")),
    (("triangle", "green", "white", "top"), ("move", "bottom")),
    (("circle", "white", "purple", "left"), ("move", "right")),
    (("square", "blue", "yellow", "bottom"), ("colour", "red")),
    (("triangle", "red", "blue", "left"), ("move", "right")),
)
# picture 1's shape takes the colour of picture 2's swatch
TWO_IMAGES = ((0, "yellow"), (2, "purple"), (4, "green"))


def draw(shape: str, colour: str, background: str, where: str) -> Image.Image:
    """A shape about a third of the picture wide on a plain background."""
    image = Image.new("RGB", (SIZE, SIZE), COLOURS[background])
    cx, cy = (f * SIZE for f in WHERE[where])
    r = SIZE // 6
    box = (cx - r, cy - r, cx + r, cy + r)
    canvas = ImageDraw.Draw(image)
    if shape == "circle":
        canvas.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        canvas.rectangle(box, fill=COLOURS[colour])
    else:
        canvas.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=COLOURS[colour])
    return image


def instruction(shape: str, edit: tuple[str, str]) -> str:
    kind, value = edit
    if kind == "colour":
        return f"make the {shape} {value}"
    return f"move the {shape} to the {value}"


def edited(before: tuple[str, str, str, str], edit: tuple[str, str]) -> tuple[str, str, str, str]:
    shape, colour, background, where = before
    if edit[0] == "colour":
        return shape, edit[1], background, where
    return shape, colour, background, edit[1]


def main(folder: Path) -> None:
    """Write the pictures, both metadata files and the sample prompts into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, two = [], []
    for i, (before, edit) in enumerate(EDITS):
        draw(*before).save(folder / f"edit_{i:02d}.png", optimize=True)
        draw(*edited(before, edit)).save(folder / f"target_{i:02d}.png", optimize=True)
        rows.append((f"target_{i:02d}.png", f"edit_{i:02d}.png", instruction(before[0], edit)))
    for j, (i, colour) in enumerate(TWO_IMAGES):
        shape, _, background, where = EDITS[i][0]
        Image.new("RGB", (SIZE, SIZE), COLOURS[colour]).save(folder / f"swatch_{j:02d}.png")
        draw(shape, colour, background, where).save(folder / f"target_two_{j:02d}.png")
        prompt = f"give the {shape} in picture 1 the colour of picture 2"
        two.append((f"target_two_{j:02d}.png", f"edit_{i:02d}.png", f"swatch_{j:02d}.png", prompt))
    _csv(folder / "metadata.csv", ("image", "edit_image", "prompt"), rows)
    _csv(folder / "metadata_two_images.csv", ("image", "edit_image", "edit_image_2", "prompt"), two)
    samples = [{"prompt": rows[0][2], "edit_image": rows[0][1]}]
    samples.append({"prompt": "move the circle to the right", "edit_image": rows[0][1]})
    (folder / "sample_prompts.txt").write_text(
        "# one JSON line per sample: the instruction and its edit image (relative to this file)\n"
        + "".join(json.dumps(s) + "\n" for s in samples)
    )


def _csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
