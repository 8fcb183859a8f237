"""``diffsynth train`` settings: one dataclass, filled from family defaults, a TOML file, flags.

Precedence, lowest first: the field defaults below; the family's ``TrainingDefaults``; the
``--config run.toml`` file (flat keys named like the flags, dashes or underscores, optionally
under a ``[train]`` table; keys naming a family option set that option); the command line.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from ..errors import ConfigError
from .family_options import setting_keys

FAMILY_DEFAULTED = (
    "lora_target_modules", "lora_rank", "learning_rate", "height", "width", "max_pixels",
    "num_frames", "gradient_checkpointing",
)  # fmt: skip
COMMA_LISTS = ("data_file_keys", "lora_target_modules", "trainable_models")


@dataclass
class TrainConfig:
    """Every ``diffsynth train`` setting; see docs/training.md for each flag."""

    model: str | None = None
    dataset: str | None = None
    metadata: str | None = None
    model_path: str | None = None
    preset: str | None = None
    output: str = "runs/train"
    learning_rate: float = 1e-4
    num_epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    seed: int = 0
    mixed_precision: str | None = None
    gradient_checkpointing: bool = True
    gradient_checkpointing_offload: bool = False
    optimizer: str = "AdamW"
    weight_decay: float | None = None
    lora_base_model: str | None = None
    lora_target_modules: str = ""
    lora_rank: int = 32
    lora_alpha: float | None = None
    lora_checkpoint: str | None = None
    trainable_models: str | None = None
    loss: str = "sft"
    timestep_sampling: str = "uniform"
    min_timestep_boundary: float = 0.0
    max_timestep_boundary: float = 1.0
    height: int | None = None
    width: int | None = None
    max_pixels: int = 1024 * 1024
    num_frames: int | None = None
    repeat: int = 1
    data_file_keys: str | None = None
    save_every_n_steps: int | None = None
    keep_last: int | None = None
    lora_format: str = "diffusers"
    resume: str | None = None
    sample_prompts: str | None = None
    sample_every: int | None = None
    sample_steps: int = 20
    on_bad_sample: str = "skip"
    check_data: bool = False
    num_workers: int = 0
    allow_pickle: bool = False
    cache_features: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_ranges(self)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# (setting, smallest allowed value, whether the smallest itself is allowed)
_LOWER_BOUNDS = (
    ("learning_rate", 0, False), ("num_epochs", 1, True), ("max_steps", 1, True),
    ("batch_size", 1, True), ("gradient_accumulation_steps", 1, True), ("warmup_steps", 0, True),
    ("max_grad_norm", 0, False), ("weight_decay", 0, True), ("lora_rank", 1, True),
    ("lora_alpha", 0, False), ("height", 1, True), ("width", 1, True), ("max_pixels", 1, True),
    ("num_frames", 1, True), ("repeat", 1, True), ("save_every_n_steps", 1, True),
    ("keep_last", 1, True), ("sample_every", 1, True), ("sample_steps", 1, True),
    ("num_workers", 0, True),
)  # fmt: skip


def check_ranges(config: TrainConfig) -> None:
    """A value outside its range (a rank of 0, a negative step count) is a one-line error
    before anything is loaded, from a flag and from a config file alike."""
    for item in fields(config):  # nan passes every comparison below, inf every lower bound
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            flag = "--" + item.name.replace("_", "-")
            raise ConfigError(f"{flag} must be a finite number, not {value}")
    for name, low, inclusive in _LOWER_BOUNDS:
        value = getattr(config, name)
        if value is not None and (value < low or (value == low and not inclusive)):
            relation = ">=" if inclusive else ">"
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be {relation} {low}, not {value}")
    lo, hi = config.min_timestep_boundary, config.max_timestep_boundary
    if not 0 <= lo < hi <= 1:
        raise ConfigError(
            "timestep boundaries must satisfy 0 <= --min-timestep-boundary < "
            f"--max-timestep-boundary <= 1 (got {lo} and {hi})"
        )


def _field_types() -> dict[str, tuple[type, ...]]:
    hints = get_type_hints(TrainConfig)
    return {
        name: tuple(a for a in get_args(h) if a is not type(None)) or (h,)
        for name, h in hints.items()
    }


def check_types(values: dict[str, Any], where: str) -> None:
    """A config-file value of the wrong type is an error naming the key and the file."""
    types = _field_types()
    for name, value in values.items():
        allowed = types[name]
        if value is None or (
            float in allowed and isinstance(value, int) and not isinstance(value, bool)
        ):
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wanted = " or ".join(t.__name__ for t in allowed)
            raise ConfigError(f"{name} in {where} must be {wanted}, not {value!r}")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file's settings with keys as field names (``learning-rate`` -> ``learning_rate``)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"--config {path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    return setting_keys(data, f"--config {path}")


def split_file_values(
    values: dict[str, Any], family_option_names: set[str], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig values, family option values); any other key is an error listing the valid ones."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - names - family_option_names)
    if unknown:
        valid = ", ".join(sorted(names | family_option_names))
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in {where}; valid keys: {valid}"
        )
    config = {k: v for k, v in values.items() if k in names}
    for key in COMMA_LISTS:  # a TOML list reads as the flag's comma list
        if isinstance(config.get(key), list):
            config[key] = ",".join(str(v) for v in config[key])
    check_types(config, where)
    return config, {k: v for k, v in values.items() if k not in names}


def family_defaults(family: Any, explicit: dict[str, Any]) -> dict[str, Any]:
    """The family's TrainingDefaults as TrainConfig values.

    When the user names neither ``--trainable-models`` nor ``--lora-base-model``, the family
    decides: full training of ``defaults.trainable_models`` if it sets one, else LoRA on
    ``defaults.lora_base_model``. ``--trainable-models`` alone means no default LoRA.
    """
    d = family.defaults
    values = {name: getattr(d, name) for name in FAMILY_DEFAULTED}
    values["data_file_keys"] = ",".join(d.data_file_keys)
    if not explicit.get("trainable_models"):
        if getattr(d, "trainable_models", None) and not explicit.get("lora_base_model"):
            values["trainable_models"] = d.trainable_models  # the family trains whole models
        else:
            values["lora_base_model"] = d.lora_base_model
    return values


def resolve(cli: dict[str, Any], file_values: dict[str, Any], family: Any | None) -> TrainConfig:
    """Merge defaults < family < file < command line (``cli`` holds only given flags)."""
    explicit = {**file_values, **cli}
    merged = {**(family_defaults(family, explicit) if family is not None else {}), **explicit}
    return TrainConfig(**merged)
