"""Family-specific flags (``FamilyOption``) parsed from the arguments click did not know.

``diffsynth train --model qwen-image-controlnet --control-image-key control`` : click passes
``["--control-image-key", "control"]`` through (``ignore_unknown_options``); this module
checks them against the family's declared options and converts each by its ``kind``
(``str int float bool path image images video``; the last three load the files). An
``images`` flag may be repeated, each file adding to its list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...registry import FamilyOption

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _valid_list(options: Iterable[FamilyOption]) -> str:
    listed = [f"{o.flag} ({o.kind})" for o in options]
    return ", ".join(listed) if listed else "none"


def split_family_args(
    args: list[str], options: list[FamilyOption], family: str, command: str
) -> dict[str, str | bool]:
    """``["--a-b", "x", "--flag", "--c=y"]`` -> raw values by option name; unknown flags raise."""
    by_flag = {o.flag: o for o in options}
    raw: dict[str, str | bool] = {}
    tokens = list(args)
    while tokens:
        token = tokens.pop(0)
        flag, has_value, inline = token.partition("=")
        option, negated = by_flag.get(flag), False
        if (
            option is None
            and flag.startswith("--no-")
            and by_flag.get("--" + flag[5:], None) is not None
        ):
            option, negated = by_flag["--" + flag[5:]], True
        if option is None or (negated and option.kind != "bool"):
            raise ConfigError(
                f"{token!r} is not an option of `diffsynth {command}` nor of family {family!r}. "
                f"Family options: {_valid_list(options)}; see `diffsynth {command} --help` for the rest."
            )
        if option.kind == "bool" and not has_value:
            raw[option.name] = not negated
            continue
        if has_value:
            value = inline
        elif tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        else:
            raise ConfigError(
                f"{option.flag} needs a value ({option.kind}: {option.help or option.name})"
            )
        previous = raw.get(option.name)
        # an ``images`` flag may be repeated (``--edit-image a.png --edit-image b.png``): the
        # files join its comma list, in order; any other repeated flag: the last one wins
        repeated = option.kind == "images" and isinstance(previous, str)
        raw[option.name] = f"{previous},{value}" if repeated else value
    return raw


def convert(option: FamilyOption, value: Any, num_frames: int | None = None) -> Any:
    """A raw value (from the command line or a config file) as the option's kind."""
    try:
        return _CONVERTERS[option.kind](value, num_frames)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{option.flag} {value!r}: not a valid {option.kind} ({exc})") from exc


def _bool(value: Any, _: int | None) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"use one of {', '.join(_TRUE + _FALSE)}")
    return text in _TRUE


def _path(value: Any, _: int | None) -> Path:
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    return path


def _image(value: Any, _: int | None) -> Any:
    from ...data.images import read_image

    return read_image(_path(value, None))


def _images(value: Any, _: int | None) -> list[Any]:
    items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
    return [_image(v.strip(), None) for v in items]


def _video(value: Any, num_frames: int | None) -> list[Any]:
    from ...data.video import read_frames

    return read_frames(_path(value, None), num_frames or 81)


_CONVERTERS = {
    "str": lambda v, _: str(v),
    "int": lambda v, _: int(v),
    "float": lambda v, _: float(v),
    "bool": _bool,
    "path": _path,
    "image": _image,
    "images": _images,
    "video": _video,
}


def family_values(
    options: list[FamilyOption], raw: Mapping[str, Any], num_frames: int | None = None
) -> dict[str, Any]:
    """Converted values of the given options, plus declared non-None defaults of the others."""
    values = {o.name: o.default for o in options if o.default is not None}
    by_name = {o.name: o for o in options}
    for name, value in raw.items():
        values[name] = convert(by_name[name], value, num_frames)
    return values


def setting_keys(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A config file's settings (top level, or its ``[train]`` table) by setting name
    (``learning-rate`` -> ``learning_rate``).

    Two spellings of one setting in one file (``learning-rate`` and ``learning_rate``) are an
    error: which one wins would depend on their order in the file. So are settings beside a
    ``[train]`` table, which would be ignored.
    """
    if isinstance(values.get("train"), dict):
        outside = sorted(key for key in values if key != "train")
        if outside:
            raise ConfigError(
                f"{where} has settings both under [train] and outside it ({', '.join(outside)}); "
                "put them all under [train] (or none)"
            )
        values = values["train"]
    settings: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name in spelt:
            raise ConfigError(
                f"{where} sets {name} twice, as {spelt[name]!r} and as {key!r}; keep one of them"
            )
        spelt[name], settings[name] = key, value
    return settings
