"""The keyword options of :func:`~diffsynth_core.training.runner.launch_training_task`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError


@dataclass
class RunOptions:
    """Everything the training loop can be told; the CLI flags map one to one onto these.

    ``max_steps`` (optimizer steps) wins over ``num_epochs`` when given. ``save_every_n_steps``
    and ``keep_last`` default to the ModelLogger's own; training states (for resume) are saved
    with every step checkpoint, at every epoch end, at the end, on SIGINT/SIGTERM and before
    stopping on a non-finite loss; ``keep_last`` (default 1) of them are kept.
    """

    learning_rate: float = 1e-4
    num_epochs: int = 1
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    seed: int = 0
    optimizer: str = "AdamW"
    weight_decay: float | None = None
    num_workers: int = 0
    resume: str | None = None
    save_every_n_steps: int | None = None
    keep_last: int | None = None
    sample_prompts: list[str] = field(default_factory=list)
    sample_every: int | None = None
    sample_height: int = 512
    sample_width: int = 512
    sample_steps: int = 20
    sample_seed: int = 0
    on_bad_sample: str | None = None
    cache_features: bool = False
    output_path: Path | None = None
    progress: bool = True
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
        positive = {
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }
        optional = {
            "max_steps": self.max_steps,
            "save_every_n_steps": self.save_every_n_steps,
            "keep_last": self.keep_last,
            "sample_every": self.sample_every,
        }
        for name, value in {
            **positive,
            **{k: v for k, v in optional.items() if v is not None},
        }.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, not {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(
                f"learning_rate must be a positive number, not {self.learning_rate!r}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be positive, not {self.max_grad_norm!r}")
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
