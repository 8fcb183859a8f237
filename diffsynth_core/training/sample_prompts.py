"""The ``--sample-prompts`` file: plain text, TOML or JSON lines.

Plain text (any other suffix) is one prompt per line, blank lines and ``#`` comments skipped.
A ``.toml`` file holds ``[[prompts]]`` tables; its top-level keys are defaults for every
prompt. A ``.jsonl`` (or ``.json``) file holds one JSON object per line (a JSON string is a
plain prompt). Each prompt sets ``prompt`` and may set ``negative_prompt``, ``width``,
``height``, ``seed``, ``steps`` and ``cfg_scale``; any other key is a family input passed to
the family's pipeline as a keyword (``control_image``, ``edit_image`` ...). A string naming an
image file (``.png`` ...; relative to the prompts file) is loaded as a PIL image, and so is each
of a list of them; another string naming an existing file becomes its full path.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# file key -> (keyword of the pipeline call, type)
SETTINGS: dict[str, tuple[str, type]] = {
    "negative_prompt": ("negative_prompt", str),
    "width": ("width", int),
    "height": ("height", int),
    "seed": ("seed", int),
    "steps": ("num_inference_steps", int),
    "cfg_scale": ("cfg_scale", float),
}
POSITIVE = ("width", "height", "steps")


@dataclass(frozen=True)
class SamplePrompt:
    """One sample: its prompt, the pipeline keywords it sets, and its family inputs."""

    prompt: str
    settings: dict[str, Any] = field(default_factory=dict)  # keywords of BasePipeline.__call__
    inputs: dict[str, Any] = field(default_factory=dict)  # family inputs (images loaded)


def read_prompt_file(path: str | Path) -> list[SamplePrompt]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"--sample-prompts {path}: no such file (one prompt per line, or .toml / .jsonl)"
        )
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".toml":
        entries = _toml_entries(text, file)
    elif file.suffix in (".jsonl", ".json"):
        entries = _json_entries(text, file)
    else:  # one prompt a line; a line that is a JSON object is one prompt with its inputs
        lines = [line.strip() for line in text.splitlines()]
        entries = [
            _json_entries(line, file)[0] if line.startswith("{") else {"prompt": line}
            for line in lines
            if line and not line.startswith("#")
        ]
    return [_prompt(entry, file, number) for number, entry in enumerate(entries, start=1)]


def _toml_entries(text: str, file: Path) -> list[dict[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--sample-prompts {file}: not valid TOML ({exc})") from None
    prompts = data.pop("prompts", None)
    if not isinstance(prompts, list) or not all(isinstance(p, dict) for p in prompts):
        raise ConfigError(
            f"--sample-prompts {file}: expected [[prompts]] tables, each with prompt = \"...\""
        )
    return [{**data, **entry} for entry in prompts]  # top-level keys: every prompt's defaults


def _json_entries(text: str, file: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--sample-prompts {file}: line {number} is not JSON ({exc.msg}); one object a line"
            ) from None
        entries.append({"prompt": value} if isinstance(value, str) else value)
    return entries


def _prompt(entry: Any, file: Path, number: int) -> SamplePrompt:
    where = f"--sample-prompts {file}: prompt {number}"
    if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
        raise ConfigError(f'{where} needs a "prompt" string, not {entry!r}')
    settings: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "prompt":
            continue
        if key not in SETTINGS:
            inputs[key] = _family_input(value, file, f"{where}, {key}")
            continue
        keyword, kind = SETTINGS[key]
        numeric = kind is float and isinstance(value, int)
        if isinstance(value, bool) or not (isinstance(value, kind) or numeric):
            raise ConfigError(f"{where}: {key} must be {kind.__name__}, not {value!r}")
        if key in POSITIVE and value < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, not {value}")
        settings[keyword] = float(value) if kind is float else value
    return SamplePrompt(entry["prompt"], settings, inputs)


def _family_input(value: Any, file: Path, where: str) -> Any:
    """Files named relative to the prompts file; images loaded (PIL, RGB)."""
    if isinstance(value, list):
        return [_family_input(item, file, where) for item in value]
    if not isinstance(value, str):
        return value
    named = Path(value).expanduser()
    full = named if named.is_absolute() else file.parent / named
    if named.suffix.lower() in IMAGE_SUFFIXES:
        if not full.is_file():
            raise ConfigError(f"{where}: no such image {full} (paths are relative to {file})")
        from PIL import Image

        try:
            with Image.open(full) as image:
                return image.convert("RGB")
        except OSError as exc:
            raise ConfigError(f"{where}: {full} is not a readable image ({exc})") from None
    return str(full) if full.is_file() else value
