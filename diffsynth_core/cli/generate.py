"""``diffsynth generate``: one image (or clip) from a model family, with LoRA files merged in.

Only click at module level; torch and the model load inside the command. LoRA files may use
any supported key form (diffusers, ComfyUI, kohya, peft, DiffSynth-Studio); each is merged
into ``pipe.<lora base model>`` at ``--lora-scale``. Family options (``diffsynth models``)
are given as extra flags; image, images, video and path options load their files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import FamilyCommand


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
    "--lora-scale", type=float, default=1.0, show_default=True, help="strength of every --lora"
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
    "--output", default="out.png", show_default=True, help="image file, or .mp4 for video families"
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
@click.pass_context
def generate(ctx: click.Context, **flags: Any) -> None:
    """Generate an image (or video) with a model family and optional LoRA files."""
    from ..plugins import get_plugin_manager
    from ..training.family_options import family_values, split_family_args

    family = get_plugin_manager().get_family(flags["model"])
    options = family.options_for("generate")
    extra = family_values(
        options, split_family_args(list(ctx.args), options, family.name, "generate")
    )
    pipe = _load_pipeline(family, flags, extra)
    for path in flags["loras"]:
        changed = _merge_lora(pipe, family, path, flags)
        click.echo(f"merged {path}: {changed} module(s) changed at scale {flags['lora_scale']}")
    result = pipe(**_call_arguments(flags), **extra)
    click.echo(f"saved {_save(result, Path(flags['output']), flags['fps'])}")


def _load_pipeline(family: Any, flags: dict[str, Any], options: dict[str, Any]) -> Any:
    import torch

    from ..pipeline import load_pipeline
    from ..training.presets import model_configs

    device = flags["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(
        torch, flags["dtype"] or ("bfloat16" if device.startswith("cuda") else "float32")
    )
    configs, _ = model_configs(family, flags["model_path"], flags["preset"], flags["allow_pickle"])
    pipe = load_pipeline(
        family, configs, device=device, torch_dtype=dtype, options=options, purpose="generate"
    )
    pipe.requires_grad_(False)
    return pipe.eval()


def _merge_lora(pipe: Any, family: Any, path: str, flags: dict[str, Any]) -> int:
    from ..errors import ConfigError
    from ..training.lora import merge_lora, read_lora_file

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
    from ..errors import ConfigError

    output.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(result, list):
        if output.suffix.lower() != ".mp4":
            raise ConfigError(
                f"this family makes video frames: give --output NAME.mp4 (not {output.name})"
            )
        from ..data.video import save_video

        return save_video(result, output, fps)
    result.save(output)
    return output
