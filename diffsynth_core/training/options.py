"""The keyword options of :func:`~diffsynth_core.training.runner.launch_training_task`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .settings import BY_NAME, SETTINGS, type_hint

# Owned by an object in a seed-style run (the Accelerator, the dataset, the ModelLogger): as
# options they default to None, "what the object was built with"
OBJECT_OWNED = tuple(s.name for s in SETTINGS if s.owner in ("accelerator", "dataset", "logger"))

# the settings that reach the training loop, generated from their declarations (settings.py)
_RunSettings = make_dataclass(
    "_RunSettings",
    [
        (s.name, type_hint(s) if s.name not in OBJECT_OWNED else s.type | None,
         field(default=None if s.name in OBJECT_OWNED else s.default))
        for s in SETTINGS
        if s.owner != "config"
    ],
)  # fmt: skip


@dataclass
class RunOptions(_RunSettings):  # type: ignore[valid-type,misc]
    """Everything the training loop can be told: the settings declared with an ``owner``
    other than ``config`` in settings.py (same names, defaults and bounds), and the few below.

    ``max_steps`` (optimizer steps) wins over ``num_epochs`` when given. The settings of an
    object the caller built -- ``gradient_accumulation_steps`` (the Accelerator),
    ``on_bad_sample`` (the dataset), ``save_every_n_steps`` and ``keep_last`` (the
    ModelLogger) -- default to that object's own; see :func:`~.runner.launch_training_task`.
    Training states (for resume) are saved with every step checkpoint, at every epoch end, at
    the end, on SIGINT/SIGTERM and before stopping on a non-finite loss; ``keep_last``
    (default 1) of them are kept.
    """

    sample_prompts: list[Any] = field(default_factory=list)  # str or SamplePrompt (sampling.py)
    sample_height: int = 512
    sample_width: int = 512
    sample_seed: int = 0
    output_path: Path | None = None
    # the validation dataset (--validation-dataset / --validation-split): see .validation
    validation_data: Any = None
    progress: bool = True
    # the run's settings for the trackers' hyperparameters (``diffsynth train``: those of
    # training_args.json); None: these options
    hyperparameters: dict[str, Any] | None = None
    # the caller seeded every RNG (runner.seed_run) before building the model, as
    # ``diffsynth train`` does: the run seeds nothing again
    seeded: bool = False
    # called on the main process once the run is known to start (every check passed, the
    # resumed state loaded), before anything is written: ``diffsynth train`` writes
    # training_args.json there, and clears the previous run under --overwrite
    on_start: Callable[[], None] | None = None

    @classmethod
    def create(cls, **kwargs: Any) -> RunOptions:
        """Build from keyword arguments, with an error naming an unknown one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(
                f"launch_training_task got unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        # None means "not given": the field's default applies (the CLI passes every flag)
        options = cls(**{k: v for k, v in kwargs.items() if v is not None})
        options.check()
        return options

    def check(self) -> None:
        """Each setting's type and bounds, as declared; then what they allow together."""
        for item in fields(_RunSettings):
            setting = BY_NAME[item.name]
            setting.check_type(getattr(self, item.name), item.name)
            setting.check(getattr(self, item.name), item.name)
        if self.cache_features and self.batch_size > 1:
            raise ConfigError(
                "--cache-features caches one sample at a time: use --batch-size 1 with "
                "--gradient-accumulation-steps N for a larger effective batch"
            )

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        return self.max_steps if self.max_steps is not None else self.num_epochs * steps_per_epoch

    def num_epochs_needed(self, steps_per_epoch: int) -> int:
        return math.ceil(self.total_steps(steps_per_epoch) / steps_per_epoch)
