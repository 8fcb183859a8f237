"""``launch_training_task``: the training loop, as one explicit recipe.

Read :func:`launch_training_task` top to bottom: it is the whole loop, with every accelerate
call in sight (``prepare``, ``accumulate``, ``backward``, ``clip_grad_norm_``,
``is_main_process``, ``wait_for_everyone``). The small components it uses live beside it:
the batch plan (:mod:`.batches`), the LR schedule and optimizer (:mod:`.optim`), training
states (:mod:`.state`), guards against lost work (:mod:`.guards`), metrics
(:mod:`.metrics`), samples (:mod:`.sampling`), stop signals (:mod:`.signals`) and the
feature cache (:mod:`.cache`).
"""

from __future__ import annotations

import copy
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import torch

from ..errors import BadSampleError, ConfigError
from .atomic import clean_temporaries
from .batches import EpochBatches
from .cache import FeatureCache
from .distributed import kind as sharding_kind
from .distributed import prepare_sharding
from .ema import EmaWeights, ema_weights
from .guards import BadBatches, StateKeeper, disk_full_is_an_error
from .logger import read_manifest
from .metrics import MetricsLog, plot_loss
from .optim import LRSchedule, build_optimizer
from .options import RunOptions
from .sampling import SampleRenderer
from .signals import StopRequest
from .state import TrainingPosition, TrainingStates
from .step_checks import StepChecks
from .validation import Validation


@dataclass
class TrainingResult:
    """What a run did; ``interrupted`` names the signal that stopped it early, if any."""

    output_path: Path
    steps: int
    epoch: int
    loss: float | None
    checkpoint: Path | None
    state: Path | None
    interrupted: str | None = None
    bad_samples: int = 0
    notes: list[str] = field(default_factory=list)
    already_finished: bool = False  # resumed a run that had ended: nothing was trained or written
    main_process: bool = True  # False on the other processes of a data-parallel run


def launch_training_task(
    accelerator: Any,
    dataset: Any,
    model: torch.nn.Module,
    model_logger: Any,
    learning_rate: float = 1e-4,
    weight_decay: float | None = None,
    num_workers: int = 0,
    save_steps: int | None = None,
    num_epochs: int = 1,
    enable_model_cpu_offload: bool = False,
    enable_optimizer_cpu_offload: bool = False,
    cpu_offload_split_threshold: int | None = None,
    customized_optimizer: str | None = None,
    args: Any = None,
    **options: Any,
) -> TrainingResult:
    """Train ``model`` on ``dataset``; checkpoints through ``model_logger``.

    The seed's parameters in the seed's order (``save_steps`` is ``save_every_n_steps``,
    ``customized_optimizer`` a dotted optimizer class, ``args`` an argparse namespace whose
    ``learning_rate``, ``weight_decay``, ``dataset_num_workers``, ``save_steps``,
    ``num_epochs`` and ``customized_optimizer`` win, as in the seed); keyword ``options`` are
    the fields of :class:`~diffsynth_core.training.options.RunOptions` (batch_size,
    max_steps, resume ...). ``model(data)`` returns the loss; ``model.trainable_modules()``
    gives what is optimized. CPU offloading is not built in: asking for it is an error.
    """
    seed = _seed_arguments(
        args, learning_rate=learning_rate, weight_decay=weight_decay, num_workers=num_workers,
        save_every_n_steps=save_steps, num_epochs=num_epochs, optimizer=customized_optimizer,
    )  # fmt: skip
    if enable_model_cpu_offload or cpu_offload_split_threshold:
        raise ConfigError(
            "CPU offloading (enable_model_cpu_offload ...) is not built in; use "
            "--gradient-checkpointing-offload, --mixed-precision bf16 or accelerate's FSDP / "
            "DeepSpeed offload"
        )
    if enable_optimizer_cpu_offload:  # the seed's name for --optimizer-offload
        options.setdefault("optimizer_offload", True)
    for name, value in seed.items():
        if value is not None and options.get(name) is not None and options[name] != value:
            raise ConfigError(f"{name} is given twice (by its seed name and as an option)")
        if value is not None:
            options[name] = value
    learning_rate = options.pop("learning_rate")
    opts = RunOptions.create(learning_rate=learning_rate, **options)
    opts, dataset, model_logger = _built_with(accelerator, dataset, model_logger, opts)
    output = _prepare_run(accelerator, model_logger, opts)
    plan = EpochBatches.for_run(dataset, opts, accelerator)
    total_steps = opts.total_steps(plan.steps_per_epoch)
    finished = finished_run(output, opts.resume, plan.layout(), total_steps)
    if finished is not None:
        return replace(finished, main_process=accelerator.is_main_process)
    schedule = LRSchedule(opts.lr_scheduler, learning_rate, opts.warmup_steps, total_steps)
    optimizer = build_optimizer(_trainable(model), opts.optimizer, learning_rate, opts.weight_decay,
                                offload=opts.optimizer_offload,
                                sharded=bool(sharding_kind(accelerator)))  # fmt: skip
    prepare_sharding(accelerator, model, opts)  # FSDP / DeepSpeed: same start, blocks wrapped
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]

    states = TrainingStates(output / "state", plan.layout(), keep=opts.keep_last or 1)
    ema = states.ema = EmaWeights.create(opts.ema_decay, accelerator, model)
    keeper = StateKeeper(states, accelerator, model, optimizer)
    resume_from = states.find(opts.resume)
    position = TrainingPosition()
    if resume_from:
        position = states.load(accelerator, model, optimizer, resume_from)
    if opts.on_start is not None:
        if accelerator.is_main_process:
            opts.on_start()  # the run starts: from here on it writes into the output folder
        accelerator.wait_for_everyone()  # (--overwrite clears the folder before anyone writes)
    log = MetricsLog(
        output, accelerator.is_main_process, total_steps, position.step, opts.progress, accelerator,
        opts.hyperparameters or _settings(opts),
    )  # fmt: skip
    log.write(_resume_note(opts.resume, resume_from, position, states.root))
    # the NaN/inf guard; the losses reach the host (and the log) every --log-every steps
    checks = StepChecks(keeper, log, accelerator, optimizer, opts.log_every, position)
    bad = BadBatches(output, accelerator.process_index, dataset)
    samples = SampleRenderer.from_options(opts, output, log)  # log: shows sampling
    cache = FeatureCache() if opts.cache_features else None
    validation = Validation.from_options(opts, total_steps)
    if position.step == 0:
        with ema_weights(ema):
            samples.render(accelerator, model, 0)
        if validation is not None:
            validation.evaluate(accelerator, model, 0, log, ema)

    def last_good() -> TrainingPosition:
        checks.settle()  # a bad step not yet read: its own error (its last good state saved)
        return position

    lr, grad_norm = schedule(position.step), None
    # keeper.saved_on: under --on-bad-sample error, save the steps done before the error ends the run
    with (
        disk_full_is_an_error(output),
        StopRequest() as stop,
        log,
        cache.installed(_manager()) if cache else nullcontext(),
        keeper.saved_on(BadSampleError, last_good),
    ):
        # a resumed state at the last step (its final checkpoint unwritten): train no more
        last_epoch = (
            opts.num_epochs_needed(plan.steps_per_epoch) if position.step < total_steps else 0
        )
        for epoch in range(position.epoch, last_epoch):
            start = position.batch if epoch == position.epoch else 0
            for index, batch in enumerate(plan.loader(epoch, start, opts.num_workers), start=start):
                data, weight = bad.usable(batch, position)  # weight 0: every sample was bad
                with accelerator.accumulate(model):
                    loss = model(data) * weight
                    checks.loss(accelerator.reduce(loss.detach(), reduction="mean"))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        max_norm = opts.max_grad_norm or math.inf  # inf: measure, never clip
                        grad_norm = accelerator.clip_grad_norm_(params, max_norm)
                        checks.gradient_norm(grad_norm)  # a bad step: no update from here on
                        lr = schedule.apply(optimizer, position.step)
                    optimizer.step()
                    optimizer.zero_grad()
                    if ema is not None and accelerator.sync_gradients:
                        ema.update(skip=checks.skip)
                if not accelerator.sync_gradients:
                    continue
                position = position.after_step(batch=index + 1)
                checks.step_done(position, epoch, lr, grad_norm, plan.samples_per_step)
                saving = model_logger.step_due(position.step)  # the same answer on every process
                sampling = samples.due(position.step)
                validating = validation is not None and validation.due(position.step)
                if saving or sampling or validating:
                    checks.settle()  # nothing is saved or shown before every step was checked
                if saving:
                    saved = model_logger.on_step_end(accelerator, model, position.step, epoch)
                    if ema is not None:
                        ema.save_beside(accelerator, model, model_logger, saved, "step", position.step, epoch)
                    keeper.save(position)
                if sampling:
                    with ema_weights(ema):
                        samples.render(accelerator, model, position.step)
                if validating and validation is not None:
                    validation.evaluate(accelerator, model, position.step, log, ema)
                if stop.agreed(accelerator, collective=checks.due(position.step)):
                    break
                if position.step >= total_steps:
                    break
            if position.batch == plan.batches_per_epoch:  # the epoch ran to its end
                checks.settle()
                position = position.next_epoch()
                saved = model_logger.on_epoch_end(accelerator, model, epoch, position.step)
                if ema is not None:
                    ema.save_beside(accelerator, model, model_logger, saved, "epoch", position.step, epoch)
                keeper.save(position)
            if stop.stopped or position.step >= total_steps:
                break
        checks.settle()
        if validation is not None and not stop.name:  # the end (once, if due at the last step)
            validation.evaluate(accelerator, model, position.step, log, ema)

    with disk_full_is_an_error(output):
        state = keeper.save(position)
        kind = "step" if stop.name else "final"  # stopped by a signal: a step checkpoint
        if stop.name:
            checkpoint = model_logger.save(
                accelerator, model, "step", position.step, position.epoch
            )
        else:
            checkpoint = model_logger.on_training_end(
                accelerator, model, position.step, position.epoch
            )
        if ema is not None:
            ema.save_beside(accelerator, model, model_logger, checkpoint, kind, position.step, position.epoch)
        if not stop.name:
            with ema_weights(ema):
                samples.render(accelerator, model, position.step)
    notes = _finish(accelerator, output, log, bad, cache) + samples.notes
    return TrainingResult(
        output,
        position.step,
        position.epoch,
        checks.last_loss,
        checkpoint,
        state,
        stop.name,
        bad.total(accelerator),
        notes,
        main_process=accelerator.is_main_process,
    )


def finished_run(
    output: Path, resume: str | None, layout: dict[str, int], total_steps: int
) -> TrainingResult | None:
    """The result of resuming a run that already ended (its state at ``total_steps`` or beyond
    and its final checkpoint written), or None when there is training left to do. Reads
    files only, so ``diffsynth train`` asks before it loads the model."""
    states = TrainingStates(output / "state", layout)
    folder = states.find(resume)
    if folder is None:
        return None
    position = states.position(folder)
    finals = [e for e in read_manifest(output) if e["kind"] == "final"]
    final = output / finals[-1]["file"] if finals else None
    if (
        position.step < total_steps
        or final is None
        or finals[-1]["step"] != position.step
        or not final.is_file()
    ):
        return None
    note = (
        f"nothing to do: the run in {output} already finished at step {position.step} "
        f"(of {total_steps}); its final checkpoint is {final}. Raise --max-steps or "
        "--num-epochs to train further."
    )
    return TrainingResult(
        output,
        position.step,
        position.epoch,
        None,
        final,
        folder,
        notes=[note],
        already_finished=True,
    )


# -- small pieces of the recipe ----------------------------------------------------------------



def _seed_arguments(args: Any, **given: Any) -> dict[str, Any]:
    """The seed's arguments as our option names; an argparse ``args`` overrides them."""
    if args is None:
        return given
    names = {
        "learning_rate": "learning_rate", "weight_decay": "weight_decay",
        "num_workers": "dataset_num_workers", "save_every_n_steps": "save_steps",
        "num_epochs": "num_epochs", "optimizer": "customized_optimizer",
    }  # fmt: skip
    return {k: getattr(args, names[k], v) for k, v in given.items()}

def _built_with(
    accelerator: Any, dataset: Any, model_logger: Any, opts: RunOptions
) -> tuple[RunOptions, Any, Any]:
    """The options completed with the settings the objects were built with, and the objects.

    ``diffsynth train`` builds the Accelerator, dataset and ModelLogger with their settings and
    passes none of them as options. A seed-style script may build its dataset or ModelLogger
    without ``on_bad_sample`` / ``save_every_n_steps`` / ``keep_last`` and pass them here (the
    seed's ``save_steps``): the run then uses a copy built with them, and the caller's objects
    stay as they were built. accelerate counts the accumulation inside the Accelerator, which
    cannot be copied: ``gradient_accumulation_steps`` is given to ``Accelerator(...)``.
    """
    built = accelerator.gradient_accumulation_steps
    if opts.gradient_accumulation_steps not in (None, built):
        raise ConfigError(
            f"gradient_accumulation_steps={opts.gradient_accumulation_steps}, but the Accelerator "
            f"was built with {built}: build it with Accelerator(gradient_accumulation_steps="
            f"{opts.gradient_accumulation_steps}) (accelerate counts the accumulation)"
        )
    dataset = _copy_with(dataset, on_bad_sample=opts.on_bad_sample)
    model_logger = _copy_with(
        model_logger, save_every_n_steps=opts.save_every_n_steps, keep_last=opts.keep_last
    )
    # the fields RunOptions inherits from the generated _RunSettings are invisible to mypy
    opts = replace(  # type: ignore[call-arg]
        opts, gradient_accumulation_steps=built, on_bad_sample=getattr(dataset, "on_bad_sample", None),
        save_every_n_steps=model_logger.save_every_n_steps, keep_last=model_logger.keep_last,
    )  # fmt: skip
    return opts, dataset, model_logger


def _copy_with(built: Any, **settings: Any) -> Any:
    """``built`` itself when it already holds every given setting, else a copy that does.
    (A setting the object does not have, such as a plain torch Dataset's on_bad_sample, is
    not its concern.)"""
    differ = {
        name: value
        for name, value in settings.items()
        if value is not None and hasattr(built, name) and getattr(built, name) != value
    }
    if not differ:
        return built
    configured = copy.copy(built)
    configured.__dict__.update(differ)
    return configured


def _prepare_run(accelerator: Any, model_logger: Any, opts: RunOptions) -> Path:
    """Checks before anything is built, and the one seeding of the run; returns the output
    folder."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:  # processes that each think they are alone
        raise ConfigError(
            f"{launched} processes were launched but accelerate sees {accelerator.num_processes}: "
            "without GPUs, set ACCELERATE_USE_CPU=1 (e.g. `ACCELERATE_USE_CPU=1 accelerate launch "
            "--multi_gpu --num_processes 2 ...`) so they train together over gloo."
        )
    if not opts.seeded:
        seed_run(accelerator, opts.seed)
    output = Path(opts.output_path or model_logger.output_path)
    if accelerator.is_main_process:
        clean_temporaries(output)  # what a killed save left behind
        clean_temporaries(output / "state")
    accelerator.wait_for_everyone()
    return output


def seed_run(accelerator: Any, seed: int) -> None:
    """Seed every RNG with ``seed`` + the process index: the same run every time, other noise
    per process (the model's initial weights are rank 0's: ``prepare`` broadcasts them)."""
    from accelerate.utils import set_seed

    set_seed(seed + accelerator.process_index)


def _settings(opts: RunOptions) -> dict[str, Any]:
    """A seed-style run's options that are settings (settings.py), for the trackers."""
    from .settings import BY_NAME

    return {f.name: getattr(opts, f.name) for f in fields(opts) if f.name in BY_NAME}


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    if hasattr(model, "trainable_modules"):  # the seed's DiffusionTrainingModule API
        return list(cast(Any, model).trainable_modules())
    return [p for p in model.parameters() if p.requires_grad]


def _manager() -> Any:
    from ..plugins import get_plugin_manager

    return get_plugin_manager()


def _resume_note(
    resume: str | None, folder: Path | None, position: TrainingPosition, root: Path
) -> str:
    if folder is not None:
        where = f"step {position.step} (epoch {position.epoch}, batch {position.batch})"
        return f"resumed from {folder} at {where}"
    return (
        f"--resume {resume}: no saved state in {root} yet, starting from the beginning"
        if resume
        else ""
    )


def _finish(
    accelerator: Any, output: Path, log: MetricsLog, bad: BadBatches, cache: FeatureCache | None
) -> list[str]:
    """The end-of-run notes: loss plot, bad samples, cache use (main process)."""
    log.close()  # the trackers, after the final samples
    notes = list(log.notes)
    if accelerator.is_main_process:
        note = plot_loss(log.csv_path, output / "loss.png")
        notes += [note] if note else []
        notes.append(bad.log.summary())
        notes += [cache.summary()] if cache is not None else []
    accelerator.wait_for_everyone()
    return notes
