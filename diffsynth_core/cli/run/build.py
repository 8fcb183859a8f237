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
from ...lora.formats import family_layout
from ...training.settings import BY_NAME, SETTINGS
from .config import TrainConfig, read_config_file, resolve, split_file_values
from .family_options import family_values, split_family_args

METADATA_NAMES = ("metadata.csv", "metadata.json", "metadata.jsonl")
# the settings the loss reads from its inputs (training/losses.py)
LOSS_INPUTS = (
    "min_timestep_boundary", "max_timestep_boundary", "timestep_sampling", "logit_mean", "logit_std",
    "mode_scale", "sigmoid_scale", "loss_weighting", "loss_type", "huber_delta",
)  # fmt: skip


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
    refuse_peer_flags(extra_args, {o.flag for o in options})
    cli_options = split_family_args(extra_args, options, family.name, "train")
    raw = {**file_options, **cli_options}
    if saved:
        origins = {k: f"from --config {config_file}" for k in {**file_config, **file_options}}
        origins |= {k: "from the command line" for k in {**cli, **cli_options}}
        run = _resumed(saved, {**file_config, **cli}, raw, family, origins)
    else:
        run = TrainRun(resolve(cli, file_config, family), family, {}, raw)
    config = run.config
    if config.gpu_memory and not config.estimate_memory:
        raise ConfigError("--gpu-memory is the budget of --estimate-memory: give both")
    if not config.dataset and not config.estimate_memory:  # the estimate reads no data
        raise ConfigError(
            "--dataset DIR is required (a folder of images with metadata.csv, or images with .txt captions)"
        )
    if config.lora_base_model and not config.lora_target_modules:
        raise ConfigError(
            "--lora-base-model needs --lora-target-modules (comma list of module names)"
        )
    from ...lora.inject import split_targets
    from ...training.quantize import check_base_precision

    check_base_precision(config.base_precision, family, split_targets(config.trainable_models or ""))
    check_lora_variant(config, family)
    run.options = family_values(options, run.raw_options, config.num_frames)
    return run


def refuse_peer_flags(args: list[str], family_flags: set[str]) -> None:
    """A flag spelt as DiffSynth-Studio, musubi-tuner or kohya spell it (``--learning_rate``,
    ``--output_dir``) is one line naming our spelling (cli/peers.py)."""
    from ..peers import flag_suggestion

    for token in args:
        flag = token.partition("=")[0]
        if flag in family_flags or flag.replace("--no-", "--", 1) in family_flags:
            continue
        message = flag_suggestion(token) if token.startswith("--") else None
        if message:
            raise ConfigError(message)


def check_lora_variant(config: TrainConfig, family: Any = None) -> None:
    """LoKr / LoHa have no DoRA or rsLoRA, and diffusers' loader cannot read them; ComfyUI's
    DoRA (``dora_scale``) normalises the weight's columns where peft's normalises its rows,
    so no ComfyUI file holds peft's DoRA."""
    if config.use_dora and config.lora_format == "comfyui":
        raise ConfigError(
            "--use-dora: ComfyUI's DoRA normalises other axes than peft's, so it cannot load "
            "this DoRA; use --lora-format diffusers (or peft)"
        )
    if config.lora_type == "lora":
        return
    if config.use_dora or config.use_rslora:
        raise ConfigError(
            f"--use-dora and --use-rslora are LoRA options: drop them or use --lora-type lora "
            f"(not {config.lora_type})"
        )
    if config.lora_format == "diffusers":
        raise ConfigError(
            f"--lora-type {config.lora_type}: diffusers' load_lora_weights cannot read LoKr / "
            "LoHa files; add --lora-format comfyui (ComfyUI's LyCORIS names) or peft"
        )
    renames = family is not None and family_layout(family).comfyui_keys is not None
    if config.lora_format == "comfyui" and renames:
        raise ConfigError(
            f"--lora-type {config.lora_type}: {family.name}'s ComfyUI names are written for "
            "LoRA pairs only (its layout renames or fuses them); use --lora-format peft"
        )


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
        caption_extension=config.caption_extension, caption_transform=caption_transform(config),
    )  # fmt: skip


def caption_transform(config: TrainConfig) -> Any:
    """The run's caption changes (data/captions.py), drawn from the run's seed."""
    from ...data.captions import CaptionTransform

    return CaptionTransform(
        dropout=config.caption_dropout, shuffle_tags=config.shuffle_tags, keep_tokens=config.keep_tokens,
        trigger_word=config.trigger_word, seed=config.seed,
    )  # fmt: skip


def build_validation(config: TrainConfig, family: Any, dataset: Any) -> tuple[Any, Any]:
    """(training dataset, validation dataset or None): ``--validation-split`` holds rows of
    the dataset out, ``--validation-dataset`` is read like ``--dataset`` (not repeated)."""
    from dataclasses import replace

    from ...training.validation import split_dataset

    if config.validation_split is not None and config.validation_dataset:
        raise ConfigError("give --validation-dataset or --validation-split, not both")
    if config.validation_split is not None:
        return split_dataset(dataset, config.validation_split)
    if config.validation_dataset:
        other = replace(config, dataset=config.validation_dataset, metadata=None, repeat=1)
        return dataset, build_dataset(other, family)
    if config.validation_every is not None:
        raise ConfigError("--validation-every needs --validation-dataset DIR or --validation-split F")
    return dataset, None


def make_accelerator(config: TrainConfig, notes: list[str] | None = None) -> Any:
    """The Accelerator of ``--distributed`` (none given: accelerate's launch config decides),
    with the ``--report-to`` trackers; ``notes`` gets the trackers' start-up notes."""
    from ...training.distributed import make_accelerator as for_mode
    from ...training.trackers import accelerator_kwargs

    trackers, tracker_notes = accelerator_kwargs(config.report_to, Path(config.output))
    if notes is not None:
        notes += tracker_notes
    return for_mode(
        config.distributed, config.mixed_precision, config.gradient_accumulation_steps,
        config.batch_size, config.max_grad_norm, trackers,
    )  # fmt: skip


def pipeline_dtype(accelerator: Any) -> Any:
    import torch

    return torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32


def build_module(run: TrainRun, accelerator: Any, cache: Any = None) -> tuple[Any, str]:
    """(PipelineTrainingModule over the family's pipeline in training mode, where the files are).

    ``cache`` (a :class:`~diffsynth_core.cache.replay.TrainingCache`, ``--cache``): the models
    it makes unnecessary are never loaded, and its cached units are answered from it."""
    import torch

    from ...lora.inject import split_targets
    from ...pipeline import load_pipeline
    from ...plugins import get_plugin_manager
    from ...training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from ...training.quantize import quiet_torchao_logs
    from .presets import COMPONENT_FLAGS, model_configs

    quiet_torchao_logs()  # diffusers imports torchao when it is installed, quantized or not
    c = run.config
    check_base_precision_runs(c.base_precision, accelerator)  # before anything loads
    files = {flag: getattr(c, flag) for flag in COMPONENT_FLAGS}
    configs, where = model_configs(run.family, c.model_path, c.preset, c.allow_pickle, files)
    where += "".join(f"; {flag} {file}" for flag, file in files.items() if file)
    dtype = pipeline_dtype(accelerator)
    swap = _swap_target(c, accelerator)  # check before loading: it takes a while
    loaded = cache.without_dropped(configs) if cache is not None else configs
    pipe = _load_at_base_precision(run, accelerator, loaded, dtype, load_pipeline, swap)
    switch_pipe_to_training_mode(
        pipe, trainable_models=c.trainable_models, lora_base_model=c.lora_base_model, lora_target_modules=c.lora_target_modules,
        lora_rank=c.lora_rank, lora_alpha=c.lora_alpha, lora_checkpoint=c.lora_checkpoint, allow_pickle=c.allow_pickle,
        lora_dtype=torch.bfloat16 if c.lora_dtype == "bf16" else torch.float32,
        preset_lora_path=None if _merge_before_quantizing(c) else c.merge_lora,
        lora_dropout=c.lora_dropout, use_dora=c.use_dora, use_rslora=c.use_rslora,
        lora_type=c.lora_type,
    )  # fmt: skip
    for name in split_targets(c.trainable_models or ""):
        getattr(
            pipe, name
        ).float()  # trained weights stay fp32 under bf16: small updates would round away
    if c.flow_shift is not None or c.dynamic_shift:  # else the family's training schedule
        pipe.scheduler.configure_training(shift=c.flow_shift, dynamic=c.dynamic_shift)
    if swap:
        from ...training.swap import install_block_swap

        install_block_swap(pipe, swap, c.blocks_to_swap, accelerator.device)
    from ...training.speed import apply_speed_settings

    trained = [c.lora_base_model] if c.lora_base_model else split_targets(c.trainable_models or "")
    if trained:  # (nothing trained: the optimizer says so)
        apply_speed_settings(pipe, trained[0], c, accelerator.device)
    module = PipelineTrainingModule(pipe, get_plugin_manager().get_loss(c.loss), module_inputs(run))
    if cache is not None:

        def load_dropped() -> Any:  # sample images only: the dropped models, for their duration
            dropped = {n: configs[n] for n in cache.dropped if n in configs}
            return load_pipeline(run.family, dropped, device=str(accelerator.device), torch_dtype=dtype)

        cache.attach(module, load_dropped)
    return module, where


def module_inputs(run: TrainRun) -> dict[str, Any]:
    """The run's settings the pipeline's units and the loss read (the module's extra inputs)."""
    c = run.config
    return {
        "use_gradient_checkpointing": c.gradient_checkpointing, "use_gradient_checkpointing_offload": c.gradient_checkpointing_offload,
        "use_gradient_checkpointing_policy": c.gradient_checkpointing_policy,
        **{name: getattr(c, name) for name in LOSS_INPUTS}, **run.options,
    }  # fmt: skip


def _merge_before_quantizing(c: Any) -> bool:
    """``--merge-lora`` with a quantized base: merged into the loaded weights before they are
    quantized (torchao's quantized weights take no in-place add)."""
    from ...training.quantize import QUANTIZED

    return bool(c.merge_lora and c.base_precision in QUANTIZED and c.lora_base_model)


def check_base_precision_runs(precision: str | None, accelerator: Any) -> None:
    """``--base-precision`` on this run's device: bf16 needs bf16 compute, a quantized one a
    kernel here (a probe layer runs forward and backward)."""
    from ...training.quantize import check_device_runs

    if precision == "bf16" and accelerator.mixed_precision != "bf16":
        raise ConfigError(
            "--base-precision bf16 computes the base in bf16: add --mixed-precision bf16 "
            "(which also loads the frozen weights in bf16), or leave --base-precision out"
        )
    check_device_runs(precision, str(accelerator.device))


def _load_at_base_precision(
    run: TrainRun, accelerator: Any, configs: Any, dtype: Any, load: Callable[..., Any],
    swap: str | None = None,
) -> Any:
    """The pipeline, its frozen base models stored at ``--base-precision``.

    Quantized bases load on the CPU and move to the device once stored quantized: a GPU never
    holds the full-precision weights (a 20B DiT in bf16 would not fit where its fp8 copy does).
    Under ``--blocks-to-swap`` (``swap``: the swapped model) the pipeline stays on the CPU:
    the swap moves what is not swapped to the device (the swapped blocks never fit there).
    """
    from ...lora.inject import split_targets
    from ...training import quantize

    c, device = run.config, str(accelerator.device)
    quantized = c.base_precision in quantize.QUANTIZED
    pipe = load(run.family, configs, device="cpu" if quantized or swap else device, torch_dtype=dtype,
                options=run.options, purpose="train")  # fmt: skip
    trained = split_targets(c.trainable_models or "")
    if _merge_before_quantizing(c):  # into the full-precision weights, quantized with them
        from ...lora.inject import merge_lora, read_lora_file

        target = getattr(pipe, c.lora_base_model or "")
        merge_lora(target, read_lora_file(c.merge_lora, target, c.allow_pickle, run.family))
    done = quantize.apply_base_precision(pipe, c.base_precision, trainable_models=trained)
    quantize.peft_quiet()
    if quantized and device != "cpu" and not swap:
        pipe.to(device)
        pipe.device = accelerator.device
    pipe.base_precision_note = quantize.describe(done, c.base_precision)  # for the start-up summary
    return pipe


def _swap_target(c: TrainConfig, accelerator: Any) -> str | None:
    """The pipeline model whose blocks ``--blocks-to-swap`` swaps (the LoRA base model), or
    None without swap; a ConfigError for a run swap cannot serve."""
    from ...lora.inject import split_targets

    if not c.blocks_to_swap:
        return None
    if not c.lora_base_model or c.lora_base_model in split_targets(c.trainable_models or ""):
        raise ConfigError(
            "--blocks-to-swap keeps frozen weights of the LoRA base model in CPU memory; "
            "full training of a model cannot swap its blocks: train a LoRA (--lora-base-model) "
            "or leave --blocks-to-swap out"
        )
    if "FSDP" in str(getattr(accelerator, "distributed_type", "")):
        raise ConfigError("--blocks-to-swap and FSDP both manage the weights' placement: use one")
    return c.lora_base_model


def build_logger(run: TrainRun, where: str, args: dict[str, Any]) -> Any:
    from ...lora.modelspec import ModelSpec
    from ...training.logger import ModelLogger

    c, d = run.config, run.family.defaults
    metadata = {"training_args": args, "model_files": where}
    spec = ModelSpec(
        title=c.metadata_title or Path(c.output).resolve().name, author=c.metadata_author,
        description=c.metadata_description,
        resolution=(c.width or d.sample_width, c.height or d.sample_height),
        trigger_phrase=c.trigger_word,
    )  # fmt: skip
    return ModelLogger(
        c.output,
        run.family.defaults.remove_prefix_in_ckpt,
        export_format=c.lora_format,
        family=run.family,
        save_every_n_steps=c.save_every_n_steps,
        keep_last=c.keep_last,
        metadata=metadata,
        save_dtype=c.save_dtype,
        modelspec=spec,
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
    notes: list[str] = []
    accelerator = make_accelerator(c, notes)
    if accelerator.is_main_process:
        for note in notes:  # e.g. TensorBoard missing: said once, at start-up
            echo(f"note: {note}")
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
    from ...training.sampling import check_family_inputs
    from .lock import remove_previous_run
    from .summary import startup_summary

    c, output = run.config, Path(run.config.output)
    dataset, validation = build_validation(c, run.family, build_dataset(c, run.family))
    plan = EpochBatches(dataset, c.batch_size, c.gradient_accumulation_steps, c.seed,
                        accelerator.num_processes, accelerator.process_index)  # fmt: skip
    total = c.max_steps or c.num_epochs * plan.steps_per_epoch
    finished = finished_run(output, c.resume, plan.layout(), total)  # before the model loads
    if finished is not None:
        finished.main_process = accelerator.is_main_process
        return finished
    cache = open_training_cache(run, dataset, accelerator) if c.cache else None
    options = run_options(run)  # reads the prompts file: its errors come before the model loads
    seed_run(accelerator, c.seed)  # the run's one seeding: LoRA initialisation, noise, timesteps
    module, where = build_module(run, accelerator, cache)
    check_family_inputs(options["sample_prompts"], module.pipe)
    args = run.args_json(accelerator.num_processes)
    logger = build_logger(run, where, args)
    if accelerator.is_main_process:
        echo(startup_summary(run, where, module, dataset, accelerator))
        if getattr(module.pipe, "base_precision_note", ""):
            echo(f"  {module.pipe.base_precision_note}")

    def on_start() -> None:
        removed = remove_previous_run(output) if c.overwrite else ""
        if removed:
            echo(removed)
        atomic_write_json(output / "training_args.json", args)

    return launch_training_task(
        accelerator, dataset, module, logger, on_start=on_start, validation_data=validation,
        hyperparameters=args, **options,
    )  # fmt: skip


def open_training_cache(run: TrainRun, dataset: Any, accelerator: Any) -> Any:
    """``--cache``: the cache, checked against the run (fingerprint, rows) before loading."""
    from ...cache.replay import open_cache
    from .presets import model_configs

    c = run.config
    configs, _ = model_configs(run.family, c.model_path, c.preset, c.allow_pickle)
    return open_cache(c.cache, run, dataset, configs, pipeline_dtype(accelerator))


def explain_cache(run: TrainRun, echo: Callable[[str], None] = print) -> int:
    """``--explain-cache``: print which units a cache holds, which run every step and which
    models training from it does not load; writes nothing."""
    from ...cache.plan import plan_for

    module, _where = build_module(run, make_accelerator(run.config))
    echo(f"{run.family.name}: split training plan (from the units' declarations)")
    echo(plan_for(module.pipe).format())
    return 0


def check_data(run: TrainRun, echo: Callable[[str], None] = print) -> int:
    """``--check-data``: check and decode every row's files; exit status 1 if any is refused."""
    from ...data import validate

    report = validate(build_dataset(run.config, run.family))
    echo(report.format())
    return 0 if report.ok and report.ok_rows else 1
