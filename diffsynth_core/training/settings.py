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
    section: Section
    help: str
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
    S("model", str, None, "model", on_resume="refuse",
      help="model family to train (`diffsynth models` lists them)"),
    S("dataset", str, None, "data", path=True, on_resume="refuse",
      help="dataset folder (images + metadata.csv, or images with .txt captions)"),
    S("metadata", str, None, "data", path=True, on_resume="refuse",
      help="metadata file (csv/json/jsonl); default: DATASET/metadata.* if present"),
    S("model_path", str, None, "model", path=True,
      help="local copy of the model repository (official layout)"),
    S("preset", str, None, "model", choices=("tiny",), on_resume="refuse",
      help="use the family's tiny model (built once into the cache)"),
    S("output", str, "runs/train", "saving", on_resume="per_start",
      help="output folder for checkpoints, state, logs and samples [runs/train]"),
    S("learning_rate", float, 1e-4, "optimization", low=0, low_inclusive=False,
      family_default=True, on_resume="differs", owner="runner",
      help="peak learning rate [family default]"),
    S("num_epochs", int, 1, "optimization", low=1, owner="runner",
      help="passes over the dataset [1]"),
    S("max_steps", int, None, "optimization", low=1, owner="runner",
      help="stop after this many optimizer steps (overrides --num-epochs)"),
    S("batch_size", int, 1, "optimization", low=1, on_resume="refuse", owner="runner",
      help="samples per batch and process; above 1, batches group same-size images [1]"),
    S("gradient_accumulation_steps", int, 1, "optimization", low=1, on_resume="refuse",
      owner="accelerator", help="batches per optimizer step [1]"),
    S("lr_scheduler", str, "constant", "optimization", choices=("constant", "linear", "cosine"),
      on_resume="differs", owner="runner", help="learning-rate schedule after warm-up [constant]"),
    S("warmup_steps", int, 0, "optimization", low=0, on_resume="differs", owner="runner",
      help="linear warm-up steps [0]"),
    S("max_grad_norm", float, None, "optimization", low=0, low_inclusive=False,
      on_resume="differs", owner="runner",
      help="clip the gradient norm to this (default: no clipping)"),
    S("seed", int, 0, "optimization", on_resume="refuse", owner="runner",
      help="seed of data order, noise and LoRA initialisation [0]"),
    S("mixed_precision", str, None, "memory", choices=("no", "bf16", "fp16"), on_resume="differs",
      help="autocast precision; bf16 also loads frozen weights in bf16 [accelerate's config]"),
    S("blocks_to_swap", int, 0, "memory", low=0,
      help="keep the frozen weights of N transformer blocks of the LoRA base model in CPU memory, copied to the GPU ahead of use [0]"),
    S("compile", bool, False, "run",
      help="torch.compile each repeated transformer block of the trained model (regional compilation) [off]"),
    S("attention", str, "sdpa", "run",
      choices=("sdpa", "math", "efficient", "cudnn", "flash-sdpa", "flash", "flash3", "sage", "flex", "xformers"),
      help="attention kernel of the trained model, through diffusers' dispatcher [sdpa]"),
    S("tf32", bool, True, "run", negatable=True,
      help="float32 matrix products on TF32 tensor cores (CUDA only) [on]"),
    S("gradient_checkpointing", bool, True, "memory", family_default=True, negatable=True,
      help="recompute activations in backward to save memory [family default]"),
    S("gradient_checkpointing_offload", bool, False, "memory",
      help="keep checkpointed activations in CPU memory"),
    S("gradient_checkpointing_policy", str, "full", "memory", choices=("full", "selective"),
      help="what checkpointing recomputes: full (each block whole) or selective (keep the matrix "
           "products' and attention's outputs, recompute the pointwise ops) [full]"),
    S("base_precision", str, None, "memory", on_resume="differs",
      help="store the frozen base models' weights in bf16, fp8, int8 or nf4 (torchao; int4 where "
           "a kernel exists), or fp8-compute (fp8 weights and fp8 matrix products) [as loaded]"),
    S("lora_dtype", str, "fp32", "lora", choices=("fp32", "bf16"), on_resume="refuse",
      help="dtype of the trainable LoRA weights [fp32]"),
    S("save_dtype", str, None, "saving", choices=("fp32", "bf16", "fp16"),
      help="dtype of the saved weight files [the trained weights' dtype]"),
    S("optimizer_offload", bool, False, "memory", on_resume="refuse", owner="runner",
      help="keep the optimizer state in CPU memory and step there (torchao's "
           "CPUOffloadOptimizer; CUDA only)"),
    S("optimizer", str, "AdamW", "optimization", on_resume="refuse", owner="runner",
      help="AdamW, Adam, SGD, AdamW8bit, AdamW4bit, AdamWFp8 (torchao) or a dotted class path "
           "(bitsandbytes.optim.AdamW8bit) [AdamW]"),
    S("weight_decay", float, None, "optimization", low=0, on_resume="differs", owner="runner",
      help="optimizer weight decay [the optimizer's default]"),
    S("ema_decay", float, None, "optimization", low=0, low_inclusive=False, high=1,
      high_inclusive=False, on_resume="refuse", owner="runner",
      help="keep an EMA of the trained weights (e.g. 0.999), saved as *-ema.safetensors and used for samples [off]"),
    S("lora_base_model", str, None, "lora", on_resume="refuse",
      help="pipeline model that gets LoRA layers [family default]"),
    S("lora_target_modules", str, "", "lora", comma_list=True, family_default=True,
      on_resume="refuse", help="comma list of module names to adapt [family default]"),
    S("lora_rank", int, 32, "lora", low=1, family_default=True, on_resume="refuse",
      help="LoRA rank [family default]"),
    S("lora_alpha", float, None, "lora", low=0, low_inclusive=False, on_resume="refuse",
      help="LoRA alpha [rank]; folded into lora_B on export"),
    S("lora_dropout", float, 0.0, "lora", low=0, high=1, high_inclusive=False, on_resume="differs",
      help="dropout on the LoRA branch (LoKr/LoHa: rank dropout) against overfitting small datasets [0]"),
    S("use_dora", bool, False, "lora", on_resume="refuse",
      help="DoRA: train each row's magnitude apart from its direction (closer to full fine-tuning)"),
    S("use_rslora", bool, False, "lora", on_resume="refuse",
      help="rsLoRA: scale by alpha/sqrt(rank), so high ranks keep learning"),
    S("lora_type", str, "lora", "lora", choices=("lora", "lokr", "loha"), on_resume="refuse",
      help="adapter: lora, lokr (Kronecker) or loha (Hadamard); lokr/loha need --lora-format comfyui or peft [lora]"),
    S("merge_lora", str, None, "lora", path=True, on_resume="refuse",
      help="fuse this LoRA file into the base model before training (a fixed part of the base)"),
    S("lora_checkpoint", str, None, "lora", path=True, on_resume="refuse",
      help="continue from this LoRA file (any supported key form)"),
    S("trainable_models", str, None, "lora", comma_list=True, on_resume="refuse",
      help="comma list of pipeline models to train fully (no LoRA unless --lora-base-model)"),
    S("loss", str, "sft", "optimization", on_resume="refuse",
      help="registered loss to train with [sft]"),
    S("timestep_sampling", str, "uniform", "optimization",
      choices=("uniform", "logit-normal", "logit_normal", "sigmoid", "shift", "mode"),
      on_resume="differs", help="how training timesteps are drawn [uniform]"),
    S("logit_mean", float, 0.0, "optimization", on_resume="differs",
      help="mean of the normal that logit-normal sampling squashes [0]"),
    S("logit_std", float, 1.0, "optimization", low=0, low_inclusive=False, on_resume="differs",
      help="standard deviation of logit-normal sampling [1]"),
    S("mode_scale", float, 1.29, "optimization", low=-1, high=1.75, on_resume="differs",
      help="heavy-tail scale of mode sampling (SD3) [1.29]"),
    S("sigmoid_scale", float, 1.0, "optimization", low=0, low_inclusive=False, on_resume="differs",
      help="scale of the normal in sigmoid and shift sampling [1]"),
    S("flow_shift", float, None, "optimization", low=0, low_inclusive=False, on_resume="differs",
      help="static shift of the training schedule, s*t/(1+(s-1)*t) [family default]"),
    S("dynamic_shift", bool, False, "optimization", on_resume="differs",
      help="shift the training schedule by each batch's resolution, as inference does"),
    S("loss_weighting", str, "family", "optimization", choices=("family", "none", "bell", "cosmap"),
      on_resume="differs", help="weight of each sample's loss by its timestep [family]"),
    S("loss_type", str, "mse", "optimization", choices=("mse", "huber", "l1"), on_resume="differs",
      help="distance between prediction and target [mse]"),
    S("huber_delta", float, 1.0, "optimization", low=0, low_inclusive=False, on_resume="differs",
      help="where the huber loss turns from quadratic to linear [1]"),
    S("min_timestep_boundary", float, 0.0, "optimization", on_resume="differs",
      help="lowest fraction of the schedule to train on [0]"),
    S("max_timestep_boundary", float, 1.0, "optimization", on_resume="differs",
      help="highest fraction of the schedule to train on [1]"),
    S("height", int, None, "data", low=1, family_default=True, on_resume="refuse",
      help="fixed training height (default: keep aspect ratio within --max-pixels)"),
    S("width", int, None, "data", low=1, family_default=True, on_resume="refuse",
      help="fixed training width"),
    S("max_pixels", int, 1024 * 1024, "data", low=1, family_default=True, on_resume="refuse",
      help="pixel budget per image when height/width are not fixed [family default]"),
    S("num_frames", int, None, "data", low=1, family_default=True, on_resume="refuse",
      help="frames per clip for video families [family default]"),
    S("repeat", int, 1, "data", low=1, on_resume="refuse",
      help="repeat the dataset this many times per epoch [1]"),
    S("caption_extension", str, ".txt", "data", on_resume="refuse",
      help="caption files of a folder dataset without metadata: cat.png -> cat.txt [.txt]"),
    S("caption_dropout", float, 0.0, "data", low=0, high=1, on_resume="differs",
      help="fraction of samples trained with the empty prompt [0]"),
    S("shuffle_tags", bool, False, "data", on_resume="differs",
      help="shuffle a caption's comma-separated tags for every sample drawn"),
    S("keep_tokens", int, 0, "data", low=0, on_resume="differs",
      help="leading tags that --shuffle-tags keeps in place [0]"),
    S("trigger_word", str, None, "data", on_resume="differs",
      help="put this word (and a comma) before every caption"),
    S("data_file_keys", str, None, "data", comma_list=True, family_default=True,
      on_resume="refuse", help="comma list of metadata columns that name files [family default]"),
    S("save_every_n_steps", int, None, "saving", low=1, owner="logger",
      help="also save a checkpoint (and training state) every N steps"),
    S("keep_last", int, None, "saving", low=1, owner="logger",
      help="keep only the newest K step checkpoints and K training states"),
    S("lora_format", str, "diffusers", "saving",
      help="key format of saved LoRA files: diffusers, comfyui, peft or a plugin's [diffusers]"),
    S("metadata_title", str, None, "saving",
      help="modelspec.title in the LoRA files' metadata (what ComfyUI and hubs show) [the output folder's name]"),
    S("metadata_author", str, None, "saving", help="modelspec.author in the LoRA files' metadata"),
    S("metadata_description", str, None, "saving",
      help="modelspec.description in the LoRA files' metadata"),
    S("resume", str, None, "saving", on_resume="per_start", owner="runner",
      help="continue a run: 'latest' or a state folder (OUTPUT/state/step-N)"),
    S("sample_prompts", str, None, "sampling", path=True,
      help="prompts for sample images: text (one per line), or .toml / .jsonl with per-prompt size, seed, steps, cfg_scale, negative_prompt and family inputs"),
    S("sample_every", int, None, "sampling", low=1, owner="runner",
      help="make sample images every N steps (also before and after training)"),
    S("sample_steps", int, 20, "sampling", low=1, owner="runner",
      help="inference steps per sample image [20]"),
    S("validation_dataset", str, None, "data", path=True, on_resume="refuse",
      help="dataset folder for a validation loss (fixed timesteps and noise: comparable between evaluations)"),
    S("validation_split", float, None, "data", low=0, low_inclusive=False, high=1, high_inclusive=False,
      on_resume="refuse", help="hold out this fraction of the dataset's rows (the last ones) for the validation loss"),
    S("validation_every", int, None, "sampling", low=1, owner="runner",
      help="compute the validation loss every N steps (and before and after training) [--sample-every, else 10% of the run]"),
    S("on_bad_sample", str, "skip", "data", choices=("skip", "error"), owner="dataset",
      help="a sample that cannot be loaded: skip and count it, or stop [skip]"),
    S("check_data", bool, False, "run", on_resume="per_start",
      help="check every dataset row (each file decoded as training reads it), report, and exit (1 if any row is refused)"),
    S("estimate_memory", bool, False, "run", on_resume="per_start",
      help="predict the peak GPU memory of this training at the model's real size (no weights loaded, nothing written), and exit"),
    S("gpu_memory", str, None, "run", on_resume="per_start",
      help="with --estimate-memory: the GPU's memory (24GiB, 16GB); also print the cheapest settings that fit it"),
    S("num_workers", int, 0, "data", low=0, owner="runner", help="DataLoader worker processes [0]"),
    S("log_every", int, None, "run", low=1, owner="runner",
      help="read the losses on the host every N steps (one metrics row per step still); between "
           "reads a bad step is caught on the GPU and no update follows it [10 with fused AdamW, "
           "the default; else 1]"),
    S("distributed", str, None, "run", choices=("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"),
      on_resume="refuse",
      help="multi-process engine: ddp, fsdp (FSDP2, sharded) or deepspeed-zero2/3 [accelerate's launch config]"),
    S("allow_pickle", bool, False, "model",
      help="allow loading pickle (.bin/.pt/.ckpt) weights you trust"),
    S("overwrite", bool, False, "saving", on_resume="per_start",
      help="start afresh in an --output that holds a previous run (replacing it)"),
    S("cache_features", bool, False, "memory", owner="runner",
      help="keep frozen-unit outputs (text embeddings, image latents) in memory after their first computation and reuse them"),
    S("cache", str, None, "memory", path=True,
      help="train from a cache built by `diffsynth cache` (the models it replaces are not loaded)"),
    S("explain_cache", bool, False, "run", on_resume="per_start",
      help="print which units a cache holds, which run every step and which models it spares, and exit"),
    S("report_to", str, None, "run", comma_list=True,
      help="comma list of accelerate trackers (tensorboard, wandb, mlflow, aim, comet_ml, clearml, "
      "dvclive, swanlab, trackio) or none [tensorboard when installed]"),
    S("transformer", str, None, "model", path=True,
      help="the denoiser from one checkpoint file (diffusers' single-file loading: original, diffusers or ComfyUI keys, fp8 too)"),
    S("text_encoder", str, None, "model", path=True,
      help="the text encoder from one checkpoint file, where diffusers can load its class from one"),
    S("vae", str, None, "model", path=True,
      help="the VAE from one checkpoint file (diffusers' single-file loading)"),
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
