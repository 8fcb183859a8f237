"""Every ``diffsynth train`` setting, declared once.

A :class:`Setting` holds a setting's name, type, default, bounds, help, section, flag spelling
and resume rule; :data:`SETTINGS` lists them all. Everything else derives from that tuple:
the click options of ``diffsynth train`` (:func:`click_params`), the ``TrainConfig`` dataclass
and its range checks (:mod:`.config`), the config file's key and type checks, the family
defaults merge, the ``--resume`` rules (:mod:`.resume_settings`), the keyword options of
``launch_training_task`` (:mod:`.options`) and ``training_args.json``. Adding a setting is one
entry here plus its use. Family options (declared by plugins) are a separate path.

This module imports nothing heavy: ``diffsynth train --help`` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Section = Literal["model", "data", "optimization", "lora", "memory", "saving", "sampling", "run"]
# --resume: "refuse" (the saved state depends on it), "differs" (allowed, but the run now
# differs from an unbroken one), "may_change" (allowed), "per_start" (what this start asks:
# never taken from the saved run)
OnResume = Literal["refuse", "differs", "may_change", "per_start"]
# who holds a setting in a seed-style run: the runner, or the object built with it
Owner = Literal["config", "runner", "accelerator", "dataset", "logger"]


@dataclass(frozen=True)
class Setting:
    """One ``diffsynth train`` setting: a flag, a TOML key and a ``TrainConfig`` field.

    ``default`` applies when neither flag, config file nor family gives a value;
    ``family_default`` says the family's ``TrainingDefaults`` supplies it (same name).
    ``low``/``high`` bound the value (None: unbounded), ``finite`` refuses NaN and inf.
    ``owner``: where a seed-style run keeps it -- ``config`` (only the CLI's build reads it),
    ``runner`` (a keyword option of ``launch_training_task``), or the object built with it
    (``accelerator``, ``dataset``, ``logger``; also a keyword option, default: the object's).
    """

    name: str
    type: type
    default: Any
    help: str
    section: Section
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    finite: bool = True
    choices: tuple[str, ...] = ()
    comma_list: bool = False
    path: bool = False  # compared as a resolved path on --resume
    family_default: bool = False
    on_resume: OnResume = "may_change"
    negatable: bool = False  # a boolean spelled --x/--no-x (else a plain --x switch)
    owner: Owner = "config"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        return self.default is None

    def check_type(self, value: Any, label: str) -> None:
        """Raise ConfigError when ``value`` is not of this setting's type (an int is a float,
        a bool is no int); None is "not given"."""
        from ..errors import ConfigError

        if value is None or (self.type is float and isinstance(value, int) and not isinstance(value, bool)):
            return
        if not isinstance(value, self.type) or (isinstance(value, bool) and self.type is not bool):
            raise ConfigError(f"{label} must be {self.type.__name__}, not {value!r}")

    def check(self, value: Any, label: str | None = None) -> None:
        """Raise ConfigError when ``value`` is outside this setting's bounds or choices."""
        from ..errors import ConfigError

        label = label or self.flag
        if value is None:
            return
        if self.finite and isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number, not {value}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{label} must be one of {', '.join(self.choices)}, not {value!r}")
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            raise ConfigError(f"{label} must be {'>=' if self.low_inclusive else '>'} {self.low}, not {value}")
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            raise ConfigError(f"{label} must be {'<=' if self.high_inclusive else '<'} {self.high}, not {value}")


S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("model", str, None, "model family to train (`diffsynth models` lists them)", "model", on_resume="refuse"),
    S("dataset", str, None, "dataset folder (images + metadata.csv, or images with .txt captions)", "data", path=True, on_resume="refuse"),
    S("metadata", str, None, "metadata file (csv/json/jsonl); default: DATASET/metadata.* if present", "data", path=True, on_resume="refuse"),
    S("model_path", str, None, "local copy of the model repository (official layout)", "model", path=True),
    S("preset", str, None, "use the family's tiny model (built once into the cache)", "model", choices=("tiny",), on_resume="refuse"),
    S("output", str, "runs/train", "output folder for checkpoints, state, logs and samples [runs/train]", "saving", on_resume="per_start"),
    S("learning_rate", float, 1e-4, "peak learning rate [family default]", "optimization", low=0, low_inclusive=False, family_default=True, on_resume="differs", owner="runner"),
    S("num_epochs", int, 1, "passes over the dataset [1]", "optimization", low=1, owner="runner"),
    S("max_steps", int, None, "stop after this many optimizer steps (overrides --num-epochs)", "optimization", low=1, owner="runner"),
    S("batch_size", int, 1, "samples per batch and process; above 1, batches group same-size images [1]", "optimization", low=1, on_resume="refuse", owner="runner"),
    S("gradient_accumulation_steps", int, 1, "batches per optimizer step [1]", "optimization", low=1, on_resume="refuse", owner="accelerator"),
    S("lr_scheduler", str, "constant", "learning-rate schedule after warm-up [constant]", "optimization", choices=("constant", "linear", "cosine"), on_resume="differs", owner="runner"),
    S("warmup_steps", int, 0, "linear warm-up steps [0]", "optimization", low=0, on_resume="differs", owner="runner"),
    S("max_grad_norm", float, None, "clip the gradient norm to this (default: no clipping)", "optimization", low=0, low_inclusive=False, on_resume="differs", owner="runner"),
    S("seed", int, 0, "seed of data order, noise and LoRA initialisation [0]", "optimization", on_resume="refuse", owner="runner"),
    S("mixed_precision", str, None, "autocast precision; bf16 also loads frozen weights in bf16 [accelerate's config]", "memory", choices=("no", "bf16", "fp16"), on_resume="differs"),
    S("gradient_checkpointing", bool, True, "recompute activations in backward to save memory [family default]", "memory", family_default=True, negatable=True),
    S("gradient_checkpointing_offload", bool, False, "keep checkpointed activations in CPU memory", "memory"),
    S("optimizer", str, "AdamW", "AdamW, Adam, SGD or a dotted class path (bitsandbytes.optim.AdamW8bit) [AdamW]", "optimization", on_resume="refuse", owner="runner"),
    S("weight_decay", float, None, "optimizer weight decay [the optimizer's default]", "optimization", low=0, on_resume="differs", owner="runner"),
    S("lora_base_model", str, None, "pipeline model that gets LoRA layers [family default]", "lora", on_resume="refuse"),
    S("lora_target_modules", str, "", "comma list of module names to adapt [family default]", "lora", comma_list=True, family_default=True, on_resume="refuse"),
    S("lora_rank", int, 32, "LoRA rank [family default]", "lora", low=1, family_default=True, on_resume="refuse"),
    S("lora_alpha", float, None, "LoRA alpha [rank]; folded into lora_B on export", "lora", low=0, low_inclusive=False, on_resume="refuse"),
    S("lora_checkpoint", str, None, "continue from this LoRA file (any supported key form)", "lora", path=True, on_resume="refuse"),
    S("trainable_models", str, None, "comma list of pipeline models to train fully (no LoRA unless --lora-base-model)", "lora", comma_list=True, on_resume="refuse"),
    S("loss", str, "sft", "registered loss to train with [sft]", "optimization", on_resume="refuse"),
    S("timestep_sampling", str, "uniform", "how training timesteps are drawn [uniform]", "optimization", choices=("uniform", "logit_normal"), on_resume="differs"),
    S("min_timestep_boundary", float, 0.0, "lowest fraction of the schedule to train on [0]", "optimization", on_resume="differs"),
    S("max_timestep_boundary", float, 1.0, "highest fraction of the schedule to train on [1]", "optimization", on_resume="differs"),
    S("height", int, None, "fixed training height (default: keep aspect ratio within --max-pixels)", "data", low=1, family_default=True, on_resume="refuse"),
    S("width", int, None, "fixed training width", "data", low=1, family_default=True, on_resume="refuse"),
    S("max_pixels", int, 1024 * 1024, "pixel budget per image when height/width are not fixed [family default]", "data", low=1, family_default=True, on_resume="refuse"),
    S("num_frames", int, None, "frames per clip for video families [family default]", "data", low=1, family_default=True, on_resume="refuse"),
    S("repeat", int, 1, "repeat the dataset this many times per epoch [1]", "data", low=1, on_resume="refuse"),
    S("data_file_keys", str, None, "comma list of metadata columns that name files [family default]", "data", comma_list=True, family_default=True, on_resume="refuse"),
    S("save_every_n_steps", int, None, "also save a checkpoint (and training state) every N steps", "saving", low=1, owner="logger"),
    S("keep_last", int, None, "keep only the newest K step checkpoints and K training states", "saving", low=1, owner="logger"),
    S("lora_format", str, "diffusers", "key format of saved LoRA files: diffusers, comfyui, peft or a plugin's [diffusers]", "saving"),
    S("resume", str, None, "continue a run: 'latest' or a state folder (OUTPUT/state/step-N)", "saving", on_resume="per_start", owner="runner"),
    S("sample_prompts", str, None, "text file, one prompt per line, for sample images", "sampling", path=True),
    S("sample_every", int, None, "make sample images every N steps (also before and after training)", "sampling", low=1, owner="runner"),
    S("sample_steps", int, 20, "inference steps per sample image [20]", "sampling", low=1, owner="runner"),
    S("on_bad_sample", str, "skip", "a sample that cannot be loaded: skip and count it, or stop [skip]", "data", choices=("skip", "error"), owner="dataset"),
    S("check_data", bool, False, "check every dataset row (each file decoded as training reads it), report, and exit (1 if any row is refused)", "run", on_resume="per_start"),
    S("num_workers", int, 0, "DataLoader worker processes [0]", "data", low=0, owner="runner"),
    S("allow_pickle", bool, False, "allow loading pickle (.bin/.pt/.ckpt) weights you trust", "model"),
    S("overwrite", bool, False, "start afresh in an --output that holds a previous run (replacing it)", "saving", on_resume="per_start"),
    S("cache_features", bool, False, "compute frozen-unit outputs (text embeddings, image latents) once per sample and reuse them", "memory", owner="runner"),
)  # fmt: skip
del S

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def type_hint(setting: Setting) -> Any:
    """The field's annotation: ``int``, or ``int | None`` for a setting without a default."""
    return setting.type | None if setting.optional else setting.type


def click_option(setting: Setting) -> tuple[list[str], dict[str, Any]]:
    """``click.option(*decls, **kwargs)`` of a setting: same flag and help, default None
    ("not given", so family defaults and the config file can fill it)."""
    import click

    if setting.type is bool:  # a switch, or --x/--no-x
        decl = f"{setting.flag}/--no-{setting.flag[2:]}" if setting.negatable else setting.flag
        return [decl], {"is_flag": True, "default": None, "help": setting.help}
    kind = click.Choice(list(setting.choices)) if setting.choices else setting.type
    return [setting.flag], {"type": kind, "default": None, "help": setting.help}
