"""Generate the bundled Wan VACE example dataset: tiny clips of moving shapes with controls.

    python examples/wan_vace/make_data.py [OUTPUT_DIR]   # default: examples/wan_vace/data

Four 64x64 clips (9 to 17 frames, 16 fps) of one shape moving over a plain background, each
with a control video, a mask video and a reference image of the shape, written with the core's ``save_video`` (mp4 through
imageio-ffmpeg; masks as folders of PNG frames, lossless). The VACE tasks they show:

* ``edges``: control = the clip's edge map, mask all white (generate every pixel, guided);
* ``grey``: control = the clip in greyscale (colourise), mask all white;
* ``inpaint``: control = the clip with a grey box over the shape's path, mask = that box in
  white (generate the box, keep the rest);
* ``extend``: control = the first 5 frames then grey, mask = black for those frames and white
  after (continue a clip).

Frames are drawn with PIL from fixed numbers, so every run draws the same pixels.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

SIZE = 64
GREY = (128, 128, 128)  # 0 in the pipeline's [-1, 1]: VACE's "nothing here"


@dataclass(frozen=True)
class Clip:
    name: str
    prompt: str
    frames: int
    background: tuple[int, int, int]
    colour: tuple[int, int, int]
    shape: str
    start: tuple[int, int]
    step: tuple[int, int]
    task: str


CLIPS = (
    Clip(
        "red_circle",
        "a red circle moves right on a dark blue background",
        17,
        (20, 30, 90),
        (230, 40, 40),
        "circle",
        (6, 24),
        (2, 0),
        "edges",
    ),
    Clip(
        "yellow_square",
        "a yellow square falls over green grass",
        13,
        (40, 140, 60),
        (240, 220, 40),
        "square",
        (24, 2),
        (0, 3),
        "grey",
    ),
    Clip(
        "white_ring",
        "a white ring moves left in the black sky",
        9,
        (5, 5, 10),
        (245, 245, 245),
        "ring",
        (44, 20),
        (-3, 1),
        "inpaint",
    ),
    Clip(
        "orange_triangle",
        "an orange triangle rises on a purple background",
        17,
        (90, 40, 120),
        (250, 140, 30),
        "triangle",
        (24, 46),
        (0, -2),
        "extend",
    ),
)


def draw_frame(clip: Clip, index: int) -> Image.Image:
    x, y = clip.start[0] + clip.step[0] * index, clip.start[1] + clip.step[1] * index
    return draw_shape(clip, Image.new("RGB", (SIZE, SIZE), clip.background), x, y)


def reference(clip: Clip) -> Image.Image:
    """The shape alone on white, 40x32: VACE's subject reference (fitted onto the frame)."""
    return draw_shape(clip, Image.new("RGB", (40, 32), (255, 255, 255)), 12, 8)


def draw_shape(clip: Clip, image: Image.Image, x: int, y: int) -> Image.Image:
    draw = ImageDraw.Draw(image)
    box = (x, y, x + 16, y + 16)
    if clip.shape == "circle":
        draw.ellipse(box, fill=clip.colour)
    elif clip.shape == "square":
        draw.rectangle(box, fill=clip.colour)
    elif clip.shape == "ring":
        draw.ellipse(box, outline=clip.colour, width=3)
    else:
        draw.polygon([(x + 8, y), (x + 16, y + 16), (x, y + 16)], fill=clip.colour)
    return image


def path_box(clip: Clip) -> tuple[int, int, int, int]:
    """The box the shape sweeps over the whole clip."""
    xs = [clip.start[0] + clip.step[0] * i for i in (0, clip.frames - 1)]
    ys = [clip.start[1] + clip.step[1] * i for i in (0, clip.frames - 1)]
    return min(xs) - 2, min(ys) - 2, max(xs) + 18, max(ys) + 18


def white(_: int) -> Image.Image:
    return Image.new("L", (SIZE, SIZE), 255)


def controls(clip: Clip, frames: list[Image.Image]) -> tuple[list[Image.Image], list[Image.Image]]:
    """(control frames, mask frames) for the clip's task."""
    mask_fn: Callable[[int], Image.Image] = white
    if clip.task == "edges":
        control = [
            ImageOps.grayscale(f).filter(ImageFilter.FIND_EDGES).convert("RGB") for f in frames
        ]
    elif clip.task == "grey":
        control = [ImageOps.grayscale(f).convert("RGB") for f in frames]
    elif clip.task == "inpaint":
        box = path_box(clip)
        control = [f.copy() for f in frames]
        for f in control:
            ImageDraw.Draw(f).rectangle(box, fill=GREY)
        region = Image.new("L", (SIZE, SIZE), 0)
        ImageDraw.Draw(region).rectangle(box, fill=255)
        mask_fn = lambda _: region  # noqa: E731 - one mask for every frame
    else:  # extend: keep the first 5 frames, generate the rest
        control = [
            f if i < 5 else Image.new("RGB", (SIZE, SIZE), GREY) for i, f in enumerate(frames)
        ]
        mask_fn = lambda i: Image.new("L", (SIZE, SIZE), 0 if i < 5 else 255)  # noqa: E731
    return control, [mask_fn(i) for i in range(len(frames))]


def save_frames(frames: list[Image.Image], folder: Path) -> None:
    """A folder of numbered PNGs: lossless, and (unlike a gif, whose writer merges repeated
    frames) always one file per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        frame.save(folder / f"{i:03d}.png", optimize=True)


def write_clip(clip: Clip, out: Path) -> dict[str, str]:
    from diffsynth_core import save_video

    frames = [draw_frame(clip, i) for i in range(clip.frames)]
    control, mask = controls(clip, frames)
    save_video(frames, out / "videos" / f"{clip.name}.mp4", fps=16)
    save_video(control, out / "control" / f"{clip.name}_{clip.task}.mp4", fps=16)
    save_frames(mask, out / "masks" / clip.name)
    (out / "refs").mkdir(parents=True, exist_ok=True)
    reference(clip).save(out / "refs" / f"{clip.name}.png", optimize=True)
    return {
        "video": f"videos/{clip.name}.mp4",
        "prompt": clip.prompt,
        "vace_video": f"control/{clip.name}_{clip.task}.mp4",
        "vace_video_mask": f"masks/{clip.name}",
        "vace_reference_image": f"refs/{clip.name}.png",
    }


def main(out: Path) -> None:
    rows = [write_clip(clip, out) for clip in CLIPS]
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(rows)} clips to {out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
