"""``diffsynth train`` settings: one dataclass, filled from family defaults, a TOML file, flags.

The settings themselves are declared in :mod:`.settings`; ``TrainConfig`` is generated from
them, so ``config.learning_rate`` is the ``learning_rate`` setting.

Precedence, lowest first: the settings' defaults; the family's ``TrainingDefaults``; the
``--config run.toml`` file (flat keys named like the flags, dashes or underscores, optionally
under a ``[train]`` table; keys naming a family option set that option); the command line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import Field, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import ConfigError
from ...training.settings import BY_NAME, SETTINGS, type_hint
from .family_options import setting_keys

FAMILY_DEFAULTED = tuple(s.name for s in SETTINGS if s.family_default)
COMMA_LISTS = tuple(s.name for s in SETTINGS if s.comma_list)


def _from_settings(cls: type) -> type:
    """``cls`` as a dataclass with one field per setting: its type and default from SETTINGS."""
    cls.__annotations__ = {s.name: type_hint(s) for s in SETTINGS}
    for s in SETTINGS:
        setattr(cls, s.name, field(default=s.default))
    return dataclass(cls)


@_from_settings
class TrainConfig:
    """Every ``diffsynth train`` setting; one field per entry of settings.SETTINGS."""

    if TYPE_CHECKING:
        # The fields are made from SETTINGS when the module runs, so that each setting is
        # declared once (settings.py), and a type checker cannot see them: to it the class
        # takes the settings as keywords and every one reads as Any (a misspelt name is
        # caught by the tests, not by mypy). ``__dataclass_fields__`` makes it a dataclass
        # to the checker too (``asdict``, ``fields``).
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

        def __init__(self, **settings: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

    def __post_init__(self) -> None:
        check_ranges(self)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check_ranges(config: Any) -> None:
    """A value outside its range (a rank of 0, a negative step count) is a one-line error
    before anything is loaded, from a flag and from a config file alike. The bounds are the
    settings' own; nan passes every comparison, so each float is also checked finite."""
    for setting in SETTINGS:
        setting.check(getattr(config, setting.name))
    lo, hi = config.min_timestep_boundary, config.max_timestep_boundary
    if not 0 <= lo < hi <= 1:
        raise ConfigError(
            "timestep boundaries must satisfy 0 <= --min-timestep-boundary < "
            f"--max-timestep-boundary <= 1 (got {lo} and {hi})"
        )
    if config.flow_shift is not None and config.dynamic_shift:
        raise ConfigError(
            "--flow-shift sets a fixed training shift and --dynamic-shift one that follows the "
            "resolution: give one of them"
        )


def check_types(values: dict[str, Any], where: str) -> None:
    """A config-file value of the wrong type is an error naming the key and the file."""
    for name, value in values.items():
        BY_NAME[name].check_type(value, f"{name} in {where}")


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
    names = set(BY_NAME)
    unknown = sorted(set(values) - names - family_option_names)
    from ..peers import key_suggestion  # a peer's spelling: name ours (one line)

    for key in unknown:
        message = key_suggestion(key, where)
        if message:
            raise ConfigError(message)
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
    """The family's TrainingDefaults as TrainConfig values: the settings declared with
    ``family_default``, and the family's choice of what to train.

    When the user names neither ``--trainable-models`` nor ``--lora-base-model``, the family
    decides: full training of ``defaults.trainable_models`` if it sets one, else LoRA on
    ``defaults.lora_base_model``. ``--trainable-models`` alone means no default LoRA.
    """
    d = family.defaults
    values = {name: getattr(d, name) for name in FAMILY_DEFAULTED}
    for name in COMMA_LISTS:  # a family's tuple of keys reads as the flag's comma list
        if isinstance(values.get(name), (list, tuple)):
            values[name] = ",".join(values[name])
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
