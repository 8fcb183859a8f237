"""``diffsynth generate``: one image (or clip) from a model family, with LoRA files merged in.

Only click at module level; torch and the model load inside the command. LoRA files may use
any supported key form (diffusers, ComfyUI, kohya, peft, DiffSynth-Studio); each is merged
into ``pipe.<lora base model>`` at ``--lora-scale``. Family options (``diffsynth models``)
are given as extra flags; image, images, video and path options load their files.

Everything a user can get wrong is checked before the model loads (minutes for a real model):
the settings' ranges, ``--lora-scale``, and ``--output`` (a writable file with an image
extension, or ``.mp4`` for a video family). A generation whose final latents hold NaN or inf
(an all-black image) still saves the file, with a warning on stderr.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import FamilyCommand

if TYPE_CHECKING:  # types only: --help stays torch-free
    from ..pipeline import BasePipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_LORA_SCALE = 100.0  # far past any useful strength; 1e30 only turns the image black


def single_file_options(function: Any) -> Any:
    """``--transformer``, ``--text-encoder`` and ``--vae``: train's settings of those names
    (declared once, in training/settings.py)."""
    from ..training.settings import BY_NAME, click_option
    from .run.presets import COMPONENT_FLAGS

    for name in reversed(tuple(COMPONENT_FLAGS)):
        decls, kwargs = click_option(BY_NAME[name])
        function = click.option(*decls, **kwargs)(function)
    return function


@click.command(
    "generate",
    cls=FamilyCommand,  # `--model NAME --help` lists the family's options too
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--model", required=True, help="model family (`diffsynth models` lists them)")
@click.option(
    "--model-path", default=None, help="local copy of the model repository (official layout)"
)
@click.option(
    "--preset", type=click.Choice(["tiny"]), default=None, help="use the family's tiny model"
)
@click.option(
    "--lora",
    "loras",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),  # checked before minutes of model loading
    help="LoRA file to merge (repeatable; any supported key form)",
)
@click.option(
    "--lora-scale",
    type=float,
    default=1.0,
    show_default=True,
    help=f"strength of every --lora (finite, at most {MAX_LORA_SCALE:g} either way)",
)
@click.option(
    "--lora-base-model", default=None, help="pipeline model the LoRA belongs to [family default]"
)
@click.option("--prompt", required=True, help="what to generate")
@click.option(
    "--negative-prompt", default=None, help="what to steer away from (with --cfg-scale above 1)"
)
@click.option("--height", type=int, default=None, help="output height [the pipeline's default]")
@click.option("--width", type=int, default=None, help="output width [the pipeline's default]")
@click.option("--steps", type=int, default=None, help="inference steps [the pipeline's default]")
@click.option(
    "--cfg-scale",
    type=float,
    default=None,
    help="classifier-free guidance scale [the pipeline's default]",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="noise seed (the same image on every machine)",
)
@click.option(
    "--output",
    default="out.png",
    show_default=True,
    help=f"image file ({', '.join(IMAGE_SUFFIXES)}), or .mp4 for video families",
)
@click.option(
    "--fps", type=float, default=16, show_default=True, help="frame rate of a video output"
)
@click.option("--device", default=None, help="torch device [cuda if available, else cpu]")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default=None,
    help="weight dtype [bfloat16 on cuda, float32 on cpu]",
)
@click.option("--allow-pickle", is_flag=True, help="allow loading pickle weights you trust")
@single_file_options
@click.pass_context
def generate(ctx: click.Context, **flags: Any) -> None:
    """Generate an image (or video) with a model family and optional LoRA files."""
    from ..plugins import get_plugin_manager
    from .run.family_options import family_values, split_family_args

    family = get_plugin_manager().get_family(flags["model"])
    check_settings(flags)
    output = check_output(Path(flags["output"]), is_video_family(family))
    options = family.options_for("generate")
    extra = family_values(
        options, split_family_args(list(ctx.args), options, family.name, "generate")
    )
    pipe = _load_pipeline(family, flags, extra)
    for path in flags["loras"]:
        changed = _merge_lora(pipe, family, path, flags)
        click.echo(f"merged {path}: {changed} module(s) changed at scale {flags['lora_scale']}")
    finite = _watch_latents(pipe)
    result = pipe(**_call_arguments(flags), **extra)
    click.echo(f"saved {_save(result, output, flags['fps'])}")
    if not finite["ok"]:
        click.echo(
            "warning: the final latents hold NaN or inf values, so the output is blank or noise; "
            "check the --lora files, --lora-scale and --dtype (float16 overflows easily)",
            err=True,
        )


def check_settings(flags: dict[str, Any]) -> None:
    """Range checks of the numeric flags, before anything loads."""
    from ..errors import ConfigError

    scale = flags["lora_scale"]
    if not math.isfinite(scale) or abs(scale) > MAX_LORA_SCALE:
        raise ConfigError(
            f"--lora-scale {scale:g}: give a finite strength between {-MAX_LORA_SCALE:g} and "
            f"{MAX_LORA_SCALE:g} (1 = as trained)"
        )
    for flag in ("steps", "height", "width"):
        if flags[flag] is not None and flags[flag] < 1:
            raise ConfigError(f"--{flag} {flags[flag]}: must be at least 1")
    if not (math.isfinite(flags["fps"]) and flags["fps"] > 0):
        raise ConfigError(f"--fps {flags['fps']:g}: must be a positive frame rate")
    cfg = flags["cfg_scale"]
    if cfg is not None and not math.isfinite(cfg):
        raise ConfigError(f"--cfg-scale {cfg:g}: must be a finite number")


def is_video_family(family: Any) -> bool:
    """A family that makes clips: it has a default frame count (``--num-frames``)."""
    return getattr(family.defaults, "num_frames", None) is not None


def check_output(output: Path, video: bool) -> Path:
    """``output`` if a file of the family's kind can be written there, else a ConfigError."""
    from ..errors import ConfigError

    suffix = output.suffix.lower()
    wanted = "NAME.mp4" if video else f"NAME{IMAGE_SUFFIXES[0]}"
    if output.is_dir():
        raise ConfigError(
            f"--output {output} is a folder: give a file name, e.g. {output / wanted}"
        )
    if video and suffix != ".mp4":
        raise ConfigError(f"--output {output}: this family makes video: give --output {wanted}")
    if not video and suffix not in IMAGE_SUFFIXES:
        kind = {".mp4": "a video file", "": "no extension"}.get(
            suffix, f"unknown extension {suffix}"
        )
        raise ConfigError(
            f"--output {output}: {kind}; this family makes images: give one of "
            f"{', '.join(IMAGE_SUFFIXES)}, e.g. {output.with_suffix('.png').name}"
        )
    _check_writable(output)
    return output


def _check_writable(output: Path) -> None:
    """Write access to ``output`` (or the nearest existing folder above it), tried for real:
    permission bits do not tell for root, read-only mounts or special file systems."""
    from ..errors import ConfigError

    if output.exists() and not os.access(output, os.W_OK):
        raise ConfigError(f"--output {output}: the file is read-only; give another --output")
    folder = output.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--output {output}: cannot write in {folder} ({exc.strerror or exc}); "
            "give another --output"
        ) from exc


def _watch_latents(pipe: Any) -> dict[str, bool]:
    """Have ``pipe.denoise`` record whether its final latents are finite (``ok``)."""
    import torch

    finite = {"ok": True}
    denoise = getattr(pipe, "denoise", None)
    if denoise is None:  # a pipeline without the shared sampling loop: nothing to watch
        return finite

    def checked(*args: Any, **kwargs: Any) -> Any:
        latents = denoise(*args, **kwargs)
        if isinstance(latents, torch.Tensor) and not bool(torch.isfinite(latents).all()):
            finite["ok"] = False
        return latents

    pipe.denoise = checked  # this instance only
    return finite


def _load_pipeline(family: Any, flags: dict[str, Any], options: dict[str, Any]) -> BasePipeline:
    import torch

    from ..pipeline import load_pipeline
    from .run.presets import COMPONENT_FLAGS, model_configs

    device = flags["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(
        torch, flags["dtype"] or ("bfloat16" if device.startswith("cuda") else "float32")
    )
    files = {flag: flags[flag] for flag in COMPONENT_FLAGS}
    configs, _ = model_configs(
        family, flags["model_path"], flags["preset"], flags["allow_pickle"], files
    )
    pipe = load_pipeline(
        family, configs, device=device, torch_dtype=dtype, options=options, purpose="generate"
    )
    pipe.requires_grad_(False)
    return pipe.eval()


def _merge_lora(pipe: BasePipeline, family: Any, path: str, flags: dict[str, Any]) -> int:
    from ..errors import ConfigError
    from ..lora.inject import merge_lora, read_lora_file

    name = flags["lora_base_model"] or family.defaults.lora_base_model
    model = getattr(pipe, name, None)
    if model is None:
        raise ConfigError(
            f"--lora-base-model {name!r}: the pipeline has no such model (models: {', '.join(pipe.model_names)})"
        )
    return merge_lora(
        model, read_lora_file(path, model, flags["allow_pickle"], family), flags["lora_scale"]
    )


def _call_arguments(flags: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's keyword arguments; what the user left out keeps the pipeline's default."""
    names = {
        "prompt": "prompt",
        "negative_prompt": "negative_prompt",
        "height": "height",
        "width": "width",
        "steps": "num_inference_steps",
        "cfg_scale": "cfg_scale",
        "seed": "seed",
    }
    return {target: flags[flag] for flag, target in names.items() if flags[flag] is not None}


def _save(result: Any, output: Path, fps: float) -> Path:
    """Written whole or not at all (an interrupted save leaves no truncated file)."""
    from PIL import Image

    from ..errors import ConfigError
    from ..training.atomic import atomic_write

    if isinstance(result, list) != (output.suffix.lower() == ".mp4"):  # a family unlike its kind
        kind = "video frames: give --output NAME.mp4" if isinstance(result, list) else "an image"
        raise ConfigError(f"this family made {kind} (not {output.name})")
    if isinstance(result, list):
        from ..data.video import save_video

        return atomic_write(output, lambda tmp: save_video(result, tmp, fps))
    image_format = Image.registered_extensions()[output.suffix.lower()]
    return atomic_write(output, lambda tmp: result.save(tmp, format=image_format))
