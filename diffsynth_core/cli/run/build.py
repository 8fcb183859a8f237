"""Build a ``diffsynth train`` run from its settings: the CLI's side of the seed's train.py.

``prepare`` resolves the settings (family defaults < config file < flags, family options);
``train`` builds what the seed's script builds by hand -- accelerator, dataset, pipeline,
training module, ModelLogger -- prints a start-up summary, writes ``training_args.json`` and
calls :func:`~diffsynth_core.training.runner.launch_training_task`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ResumeError
from ...training.settings import BY_NAME, SETTINGS
from .config import TrainConfig, read_config_file, resolve, split_file_values
from .family_options import family_values, split_family_args

METADATA_NAMES = ("metadata.csv", "metadata.json", "metadata.jsonl")


@dataclass
class TrainRun:
    """Resolved settings: the TrainConfig, the family and its options (converted and raw)."""

    config: TrainConfig
    family: Any
    options: dict[str, Any] = field(default_factory=dict)
    raw_options: dict[str, Any] = field(default_factory=dict)
    # --resume: the saved settings overridden (one line each), and why the resume is refused
    overrides: list[str] = field(default_factory=list)
    resume_conflict: str | None = None

    def args_json(self, num_processes: int = 1) -> dict[str, Any]:
        from ... import __version__

        return {
            "config": self.config.as_json(),
            "family": self.family.name,
            "family_version": self.family.version,
            "family_options": {
                k: str(v) if isinstance(v, Path) else v for k, v in self.raw_options.items()
            },
            "num_processes": num_processes,
            "diffsynth_core": __version__,
            "command": sys.argv,
        }


def prepare(cli: dict[str, Any], config_file: str | None, extra_args: list[str]) -> TrainRun:
    """Settings from flags (``cli``: only those given), the config file and extra family flags.

    Under ``--resume`` the run's saved settings are the base (see :mod:`.resume_settings`).
    """
    from ...plugins import get_plugin_manager
    from .resume_settings import read_saved

    file_values = read_config_file(config_file) if config_file else {}
    given = {**file_values, **cli}
    resume, output = given.get("resume"), Path(given.get("output") or BY_NAME["output"].default)
    if resume and given.get("overwrite"):
        raise ConfigError(
            "--overwrite starts afresh and --resume continues the run: give one of them"
        )
    saved = read_saved(output, resume) if resume else None
    model = given.get("model") or (saved["config"].get("model") if saved else None)
    if not model:
        raise ConfigError(
            '--model is required (or `model = "..."` in --config); `diffsynth models` lists the installed families'
        )
    family = get_plugin_manager().get_family(model)
    options = family.options_for("train")
    file_config, file_options = split_file_values(
        file_values, {o.name for o in options}, f"--config {config_file}"
    )
    cli_options = split_family_args(extra_args, options, family.name, "train")
    raw = {**file_options, **cli_options}
    if saved:
        origins = {k: f"from --config {config_file}" for k in {**file_config, **file_options}}
        origins |= {k: "from the command line" for k in {**cli, **cli_options}}
        run = _resumed(saved, {**file_config, **cli}, raw, family, origins)
    else:
        run = TrainRun(resolve(cli, file_config, family), family, {}, raw)
    config = run.config
    if not config.dataset:
        raise ConfigError(
            "--dataset DIR is required (a folder of images with metadata.csv, or images with .txt captions)"
        )
    if config.lora_base_model and not config.lora_target_modules:
        raise ConfigError(
            "--lora-base-model needs --lora-target-modules (comma list of module names)"
        )
    run.options = family_values(options, run.raw_options, config.num_frames)
    return run


def _resumed(
    saved: dict[str, Any],
    given: dict[str, Any],
    raw: dict[str, Any],
    family: Any,
    origins: dict[str, str],
) -> TrainRun:
    """The run to resume: its saved settings, with what this start may change applied."""
    from .resume_settings import resume_settings

    merged = resume_settings(saved, given, raw, origins)
    run = TrainRun(TrainConfig(**merged.config), family, {}, merged.family_options)
    run.overrides = [f"settings of {merged.source}", *merged.overrides]
    run.resume_conflict = merged.conflict
    return run


def find_metadata(config: TrainConfig) -> str | None:
    if config.metadata:
        return config.metadata
    found = [
        Path(config.dataset or ".") / n
        for n in METADATA_NAMES
        if (Path(config.dataset or ".") / n).is_file()
    ]
    return str(found[0]) if found else None  # None: scan the folder for media + .txt captions


def build_dataset(config: TrainConfig, family: Any) -> Any:
    """UnifiedDataset with the family's data keys, required columns and resize rule."""
    from ...data import UnifiedDataset

    factor = family.defaults.division_factor
    keys: list[str] = [k.strip() for k in (config.data_file_keys or "image").split(",") if k.strip()]
    size = {
        "max_pixels": config.max_pixels,
        "height": config.height,
        "width": config.width,
        "height_division_factor": factor,
        "width_division_factor": factor,
    }
    image = UnifiedDataset.default_image_operator(config.dataset, **size)
    video = (
        UnifiedDataset.default_video_operator(
            config.dataset, num_frames=config.num_frames or 81, **size
        )
        if any("video" in k for k in keys)
        else None
    )
    main = video if "video" in keys[0] else image
    special = {
        k: (video if "video" in k and video is not None else image)
        for k in keys[1:]
        if ("video" in k) != ("video" in keys[0])
    }
    return UnifiedDataset(
        config.dataset, find_metadata(config), repeat=config.repeat, data_file_keys=keys, main_data_operator=main,
        special_operator_map=special, required_columns=family.defaults.required_columns, on_bad_sample=config.on_bad_sample,
    )  # fmt: skip


def make_accelerator(config: TrainConfig) -> Any:
    """The Accelerator of ``--distributed`` (none given: accelerate's launch config decides)."""
    from ...training.distributed import make_accelerator as for_mode

    return for_mode(
        config.distributed, config.mixed_precision, config.gradient_accumulation_steps,
        config.batch_size, config.max_grad_norm,
    )  # fmt: skip


def build_module(run: TrainRun, accelerator: Any) -> tuple[Any, str]:
    """(PipelineTrainingModule over the family's pipeline in training mode, where the files are)."""
    import torch

    from ...lora.inject import split_targets
    from ...pipeline import load_pipeline
    from ...plugins import get_plugin_manager
    from ...training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from .presets import model_configs

    c = run.config
    configs, where = model_configs(run.family, c.model_path, c.preset, c.allow_pickle)
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    pipe = load_pipeline(
        run.family,
        configs,
        device=str(accelerator.device),
        torch_dtype=dtype,
        options=run.options,
        purpose="train",
    )
    switch_pipe_to_training_mode(
        pipe, trainable_models=c.trainable_models, lora_base_model=c.lora_base_model, lora_target_modules=c.lora_target_modules,
        lora_rank=c.lora_rank, lora_alpha=c.lora_alpha, lora_checkpoint=c.lora_checkpoint, allow_pickle=c.allow_pickle,
    )  # fmt: skip
    for name in split_targets(c.trainable_models or ""):
        getattr(
            pipe, name
        ).float()  # trained weights stay fp32 under bf16: small updates would round away
    extra = {
        "use_gradient_checkpointing": c.gradient_checkpointing, "use_gradient_checkpointing_offload": c.gradient_checkpointing_offload,
        "min_timestep_boundary": c.min_timestep_boundary, "max_timestep_boundary": c.max_timestep_boundary,
        "timestep_sampling": c.timestep_sampling, **run.options,
    }  # fmt: skip
    return PipelineTrainingModule(pipe, get_plugin_manager().get_loss(c.loss), extra), where


def build_logger(run: TrainRun, where: str, args: dict[str, Any]) -> Any:
    from ...training.logger import ModelLogger

    c = run.config
    metadata = {"training_args": args, "model_files": where}
    return ModelLogger(
        c.output,
        run.family.defaults.remove_prefix_in_ckpt,
        export_format=c.lora_format,
        family=run.family,
        save_every_n_steps=c.save_every_n_steps,
        keep_last=c.keep_last,
        metadata=metadata,
    )


def run_options(run: TrainRun) -> dict[str, Any]:
    """The keyword options of launch_training_task: the settings the runner holds (``owner``
    "runner" in settings.py). Those of the accelerator, dataset and logger went into them
    when they were built."""
    from ...training.sampling import read_prompts

    c, d = run.config, run.family.defaults
    options = {s.name: getattr(c, s.name) for s in SETTINGS if s.owner == "runner"}
    options["sample_prompts"] = read_prompts(c.sample_prompts) if c.sample_prompts else []
    options["sample_height"], options["sample_width"] = (
        c.height or d.sample_height,
        c.width or d.sample_width,
    )
    options["sample_seed"], options["output_path"] = c.seed, Path(c.output)
    options["seeded"] = True  # _train seeded the run before building the model
    return options


def train(run: TrainRun, echo: Callable[[str], None] = print) -> Any:
    """Build everything and train; returns the TrainingResult.

    The order keeps a run that does not start from writing anything: settings were resolved
    by :func:`prepare`; here the output folder is checked, locked (main process), the resume
    checked; training_args.json is written (and an --overwrite'n run cleared) only once the
    runner has built and loaded everything.
    """
    from ...training.guards import disk_full_is_an_error
    from .lock import OutputLock, check_previous_run, check_writable

    c = run.config
    output = Path(c.output)
    check_writable(output)
    accelerator = make_accelerator(c)
    with (
        OutputLock(output) if accelerator.is_main_process else nullcontext(),
        disk_full_is_an_error(output),  # also while writing training_args.json and the logs
    ):
        check_previous_run(output, c.resume, c.overwrite)  # (a run going on: the lock said so)
        if run.resume_conflict:
            raise ResumeError(run.resume_conflict)
        return _train(run, accelerator, echo)


def _train(run: TrainRun, accelerator: Any, echo: Callable[[str], None]) -> Any:
    from ...training.atomic import atomic_write_json
    from ...training.batches import EpochBatches
    from ...training.runner import finished_run, launch_training_task, seed_run
    from .lock import remove_previous_run
    from .summary import startup_summary

    c, output = run.config, Path(run.config.output)
    dataset = build_dataset(c, run.family)
    plan = EpochBatches(dataset, c.batch_size, c.gradient_accumulation_steps, c.seed,
                        accelerator.num_processes, accelerator.process_index)  # fmt: skip
    total = c.max_steps or c.num_epochs * plan.steps_per_epoch
    finished = finished_run(output, c.resume, plan.layout(), total)  # before the model loads
    if finished is not None:
        finished.main_process = accelerator.is_main_process
        return finished
    seed_run(accelerator, c.seed)  # the run's one seeding: LoRA initialisation, noise, timesteps
    module, where = build_module(run, accelerator)
    args = run.args_json(accelerator.num_processes)
    logger = build_logger(run, where, args)
    if accelerator.is_main_process:
        echo(startup_summary(run, where, module, dataset, accelerator))

    def on_start() -> None:
        removed = remove_previous_run(output) if c.overwrite else ""
        if removed:
            echo(removed)
        atomic_write_json(output / "training_args.json", args)

    return launch_training_task(
        accelerator, dataset, module, logger, on_start=on_start, **run_options(run)
    )


def check_data(run: TrainRun, echo: Callable[[str], None] = print) -> int:
    """``--check-data``: check and decode every row's files; exit status 1 if any is refused."""
    from ...data import validate

    report = validate(build_dataset(run.config, run.family))
    echo(report.format())
    return 0 if report.ok and report.ok_rows else 1
