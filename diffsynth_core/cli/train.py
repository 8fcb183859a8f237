"""``diffsynth train``: train a LoRA (or full weights) of any installed model family.

Only click is imported at module level; torch and the model code load inside the command, so
``diffsynth --help`` stays fast. Every flag defaults to None ("not given"), so that family
defaults and ``--config`` values can fill what the user left out (see training/config.py).
Flags the command does not know are checked against the family's own options.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import click

from .common import FamilyCommand

CHOICES = {
    "lr_scheduler": click.Choice(["constant", "linear", "cosine"]),
    "mixed_precision": click.Choice(["no", "bf16", "fp16"]),
    "on_bad_sample": click.Choice(["skip", "error"]),
    "timestep_sampling": click.Choice(["uniform", "logit_normal"]),
}

# (flag, type, help); every option defaults to None = not given
OPTIONS: list[tuple[str, Any, str]] = [
    ("--model", str, "model family to train (`diffsynth models` lists them)"),
    ("--dataset", str, "dataset folder (images + metadata.csv, or images with .txt captions)"),
    ("--metadata", str, "metadata file (csv/json/jsonl); default: DATASET/metadata.* if present"),
    ("--model-path", str, "local copy of the model repository (official layout)"),
    ("--preset", click.Choice(["tiny"]), "use the family's tiny model (built once into the cache)"),
    ("--output", str, "output folder for checkpoints, state, logs and samples [runs/train]"),
    ("--learning-rate", float, "peak learning rate [family default]"),
    ("--num-epochs", int, "passes over the dataset [1]"),
    ("--max-steps", int, "stop after this many optimizer steps (overrides --num-epochs)"),
    (
        "--batch-size",
        int,
        "samples per batch and process; above 1, batches group same-size images [1]",
    ),
    ("--gradient-accumulation-steps", int, "batches per optimizer step [1]"),
    ("--lr-scheduler", CHOICES["lr_scheduler"], "learning-rate schedule after warm-up [constant]"),
    ("--warmup-steps", int, "linear warm-up steps [0]"),
    ("--max-grad-norm", float, "clip the gradient norm to this (default: no clipping)"),
    ("--seed", int, "seed of data order, noise and LoRA initialisation [0]"),
    (
        "--mixed-precision",
        CHOICES["mixed_precision"],
        "autocast precision; bf16 also loads frozen weights in bf16 [accelerate's config]",
    ),
    (
        "--gradient-checkpointing/--no-gradient-checkpointing",
        None,
        "recompute activations in backward to save memory [family default]",
    ),
    ("--gradient-checkpointing-offload", None, "keep checkpointed activations in CPU memory"),
    (
        "--optimizer",
        str,
        "AdamW, Adam, SGD or a dotted class path (bitsandbytes.optim.AdamW8bit) [AdamW]",
    ),
    ("--weight-decay", float, "optimizer weight decay [the optimizer's default]"),
    ("--lora-base-model", str, "pipeline model that gets LoRA layers [family default]"),
    ("--lora-target-modules", str, "comma list of module names to adapt [family default]"),
    ("--lora-rank", int, "LoRA rank [family default]"),
    ("--lora-alpha", float, "LoRA alpha [rank]; folded into lora_B on export"),
    ("--lora-checkpoint", str, "continue from this LoRA file (any supported key form)"),
    (
        "--trainable-models",
        str,
        "comma list of pipeline models to train fully (no LoRA unless --lora-base-model)",
    ),
    ("--loss", str, "registered loss to train with [sft]"),
    (
        "--timestep-sampling",
        CHOICES["timestep_sampling"],
        "how training timesteps are drawn [uniform]",
    ),
    ("--min-timestep-boundary", float, "lowest fraction of the schedule to train on [0]"),
    ("--max-timestep-boundary", float, "highest fraction of the schedule to train on [1]"),
    ("--height", int, "fixed training height (default: keep aspect ratio within --max-pixels)"),
    ("--width", int, "fixed training width"),
    (
        "--max-pixels",
        int,
        "pixel budget per image when height/width are not fixed [family default]",
    ),
    ("--num-frames", int, "frames per clip for video families [family default]"),
    ("--repeat", int, "repeat the dataset this many times per epoch [1]"),
    ("--data-file-keys", str, "comma list of metadata columns that name files [family default]"),
    ("--save-every-n-steps", int, "also save a checkpoint (and training state) every N steps"),
    ("--keep-last", int, "keep only the newest K step checkpoints and K training states"),
    (
        "--lora-format",
        str,
        "key format of saved LoRA files: diffusers, comfyui, peft or a plugin's [diffusers]",
    ),
    ("--resume", str, "continue a run: 'latest' or a state folder (OUTPUT/state/step-N)"),
    ("--sample-prompts", str, "text file, one prompt per line, for sample images"),
    ("--sample-every", int, "make sample images every N steps (also before and after training)"),
    ("--sample-steps", int, "inference steps per sample image [20]"),
    (
        "--on-bad-sample",
        CHOICES["on_bad_sample"],
        "a sample that cannot be loaded: skip and count it, or stop [skip]",
    ),
    (
        "--check-data",
        None,
        "check every dataset row (each file decoded as training reads it), report, and exit (1 if any row is refused)",
    ),
    ("--num-workers", int, "DataLoader worker processes [0]"),
    ("--allow-pickle", None, "allow loading pickle (.bin/.pt/.ckpt) weights you trust"),
    ("--overwrite", None, "start afresh in an --output that holds a previous run (replacing it)"),
    (
        "--cache-features",
        None,
        "compute frozen-unit outputs (text embeddings, image latents) once per sample and reuse them",
    ),
]


def _option(
    flag: str, kind: Any, help_text: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if kind is None:  # a boolean flag
        return click.option(flag, is_flag=True, default=None, help=help_text)
    return click.option(flag, type=kind, default=None, help=help_text)


def train_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for flag, kind, help_text in reversed(OPTIONS):
        function = _option(flag, kind, help_text)(function)
    return function


@click.command(
    "train",
    cls=FamilyCommand,  # `--model NAME --help` lists the family's options too
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of settings (keys named like the flags); flags override it",
)
@train_options
@click.pass_context
def train(ctx: click.Context, config_file: str | None, **flags: Any) -> None:
    """Train a LoRA (or full weights) of a model family on a dataset.

    Family-specific options (shown by `diffsynth models`) are given as extra flags, e.g.
    `--control-image-key control`. Multi-GPU: `accelerate launch $(which diffsynth) train ...`.
    """
    from ..training import build

    given = {name: value for name, value in flags.items() if value is not None}
    run = build.prepare(given, config_file, list(ctx.args))
    if run.config.check_data:
        ctx.exit(build.check_data(run, click.echo))
    result = build.train(run, click.echo)
    # the other processes of a data-parallel run trained the same steps: one report is enough
    echo = click.echo if result.main_process else (lambda _line: None)
    for note in result.notes:
        echo(note)
    if result.interrupted:
        echo(
            f"stopped by {result.interrupted} at step {result.steps}; state saved in {result.state}. Continue with --resume latest."
        )
        ctx.exit(_exit_status(result.interrupted))
    if not result.already_finished:
        echo(f"done: {result.steps} steps, checkpoint {result.checkpoint}")


def _exit_status(signal_name: str) -> int:
    """128 + the signal number, as a shell reports a process stopped by that signal."""
    known = signal.Signals.__members__
    return 128 + known[signal_name].value if signal_name in known else 1
