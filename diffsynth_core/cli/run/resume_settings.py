"""``--resume``: a resumed run keeps its own settings, those saved in ``training_args.json``.

A job script may restart ``diffsynth train --output runs/x --resume latest`` with no other
flag, or with every flag of the first start; either way the run continues as it was set up.
The saved settings are the base. A setting given on this start (a flag, or a ``--config``
value) that differs from the saved one:

* is refused when the saved state depends on it (``on_resume="refuse"`` in :mod:`.settings`: the model, the data and
  its order, the LoRA layout, the optimizer), naming the setting and both values;
* otherwise replaces the saved value, and the start-up summary lists it, one line each
  (``max_steps: 4 -> 8 (from the command line)``). Changing the learning rate or its schedule
  is a legitimate choice, but the run then differs from an unbroken one: the line says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ResumeError
from ...training.settings import SETTINGS
from .config import COMMA_LISTS

SAVED_ARGS = "training_args.json"

# each setting's ``on_resume`` (settings.py): what the saved weights, optimizer state and data
# position depend on; what is allowed but makes the steps from here on differ from those of the
# unbroken run; and what this start asks for itself
BREAKING = tuple(s.name for s in SETTINGS if s.on_resume == "refuse")
CHANGES_TRAINING = tuple(s.name for s in SETTINGS if s.on_resume == "differs")
NOT_COMPARED = tuple(s.name for s in SETTINGS if s.on_resume == "per_start")
PATHS = tuple(s.name for s in SETTINGS if s.path)
DIFFERS = "; the run now differs from an unbroken one"


@dataclass
class ResumedSettings:
    """The settings of the resumed run, what this start changed, and why it is refused."""

    config: dict[str, Any]
    family_options: dict[str, Any]
    overrides: list[str]
    conflict: str | None
    source: Path


def saved_args_file(output: Path, resume: str) -> Path:
    """``OUTPUT/training_args.json``; for ``--resume OTHER/state/step-N``, OTHER's own."""
    if resume != "latest":
        beside = Path(resume).parent.parent / SAVED_ARGS
        if beside.is_file():
            return beside
    return output / SAVED_ARGS


def read_saved(output: Path, resume: str) -> dict[str, Any] | None:
    """The saved training_args.json of the run to resume, or None when there is none yet."""
    file = saved_args_file(output, resume)
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        data["config"]  # noqa: B018 - a file without settings is no run's
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResumeError(
            f"--resume: {file} holds no readable run settings ({exc}); restore it, or start "
            "a new run with another --output"
        ) from exc
    data["path"] = file
    return data


def resume_settings(
    saved: dict[str, Any],
    given: dict[str, Any],
    given_options: dict[str, Any],
    origins: dict[str, str],
) -> ResumedSettings:
    """Merge ``given`` settings (and family options) of this start over the ``saved`` ones.

    ``origins`` says where each given value came from (``from the command line``); the
    overrides are listed one per line, the refused changes in one error line.
    """
    defaults = {s.name: s.default for s in SETTINGS}
    config = {k: v for k, v in saved["config"].items() if k in defaults}
    for name in NOT_COMPARED:  # what this start asks (a saved --overwrite would delete the state)
        config[name] = defaults[name]
    overrides, refused = [], []
    for name, value in given.items():
        old = config.get(name, defaults.get(name))
        if name in NOT_COMPARED or _same(name, old, value):
            config[name] = value if name in NOT_COMPARED else old
            continue
        if name in BREAKING:
            flag = "--" + name.replace("_", "-")
            refused.append(f"{flag} was {_show(old)} in that run, {_show(value)} now")
            continue
        config[name] = value
        note = DIFFERS if name in CHANGES_TRAINING else ""
        overrides.append(f"{name}: {_show(old)} -> {_show(value)} ({origins[name]}{note})")
    options = dict(saved.get("family_options") or {})
    for name, value in given_options.items():
        if str(options.get(name)) != str(value):
            overrides.append(
                f"{name}: {_show(options.get(name))} -> {_show(value)} ({origins[name]}{DIFFERS})"
            )
            options[name] = value
    conflict = None
    if refused:
        conflict = (
            f"cannot resume the run in {saved['path'].parent}: {'; '.join(refused)}. Its saved "
            "state depends on these: drop the flag(s) to resume with the run's own settings, "
            "or start a new run (another --output, or --overwrite)"
        )
    return ResumedSettings(config, options, overrides, conflict, saved["path"])


def _same(name: str, old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is new
    if name in PATHS:
        return Path(str(old)).resolve() == Path(str(new)).resolve()
    if name in COMMA_LISTS:
        return _items(old) == _items(new)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return bool(old == new) or (math.isnan(old) and math.isnan(new))
    return bool(old == new)


def _items(value: Any) -> list[str]:
    parts = value if isinstance(value, list) else str(value).split(",")
    return [str(p).strip() for p in parts if str(p).strip()]


def _show(value: Any) -> str:
    return (
        "(not set)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    )
