"""``diffsynth convert-config PEER_FILE``: a peer trainer's settings as a ``diffsynth train`` TOML.

Reads a DiffSynth-Studio argument list (a shell script or text file of ``--flag value`` as its
train.py takes; a musubi-tuner or kohya command line reads the same way), a musubi-tuner TOML
(its dataset config, its training arguments, or both) or an ai-toolkit YAML job. Every setting
is looked up in :mod:`.peers`; what has no equivalent is named, with why, at the top of the TOML
and on stderr. The TOML written is checked as ``--config`` checks it, so it loads as it is.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .peers import OPTIMIZERS, PEERS, target_of

FORMATS = ("auto", "diffsynth-studio", "musubi-tuner", "ai-toolkit")
Pairs = list[tuple[str, Any]]

# ai-toolkit's job keys (under config.process[0]) -> our setting (None: no equivalent, and why)
AITK: dict[str, tuple[str | None, str]] = {
    "trigger_word": ("trigger_word", ""),
    "network.linear": ("lora_rank", ""),
    "network.linear_alpha": ("lora_alpha", ""),
    "save.save_every": ("save_every_n_steps", ""),
    "save.max_step_saves_to_keep": ("keep_last", ""),
    "train.batch_size": ("batch_size", ""),
    "train.steps": ("max_steps", ""),
    "train.gradient_accumulation": ("gradient_accumulation_steps", ""),
    "train.gradient_accumulation_steps": ("gradient_accumulation_steps", ""),
    "train.gradient_checkpointing": ("gradient_checkpointing", ""),
    "train.lr": ("learning_rate", ""),
    "train.max_grad_norm": ("max_grad_norm", ""),
    "train.timestep_type": ("timestep_sampling", ""),
    "sample.sample_every": ("sample_every", ""),
    "sample.sample_steps": ("sample_steps", ""),
    "datasets.folder_path": ("dataset", ""),
    "datasets.num_repeats": ("repeat", ""),
    "datasets.caption_dropout_rate": ("caption_dropout", ""),
    "datasets.shuffle_tokens": ("shuffle_tags", ""),
    "datasets.keep_tokens": ("keep_tokens", ""),
    "model.name_or_path": ("model_path", ""),
    "model.is_flux": (None, ""),
    "model.arch": (None, ""),
    "train.train_unet": (None, "the family decides what is trained (--lora-base-model, --trainable-models)"),
    "train.train_text_encoder": (None, "the family decides what is trained (--lora-base-model, --trainable-models)"),
    "network.type": (None, "LoRA only"),
    "train.noise_scheduler": (None, "the family's flow-matching schedule"),
    "train.optimizer": ("optimizer", ""),
    "train.dtype": ("mixed_precision", ""),
    "save.dtype": (None, "LoRA files are saved in fp32"),
    "model.quantize": (None, "no quantized base in this installation"),
    "sample.prompts": (None, "write the prompts one per line into a file and set sample_prompts"),
}
AITK_FAMILIES = {"flux": "flux-dev", "qwen_image": "qwen-image", "wan21": "wan-vace"}
AITK_VALUES = {
    "train.optimizer": OPTIMIZERS,
    "train.dtype": {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "fp32": "no", "float32": "no"},
    "train.timestep_type": {"sigmoid": "sigmoid", "linear": "uniform", "shift": "shift"},
}  # fmt: skip


@dataclass
class Conversion:
    """Our settings (by name) and the peer settings left out, each with why."""

    settings: dict[str, Any] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)


def read_arg_list(text: str) -> Pairs:
    """``--flag value`` / ``--flag=value`` / ``--switch`` pairs of a command line or script
    (line continuations joined; everything before the first ``--flag`` skipped)."""
    tokens = shlex.split(text.replace("\\\n", " "), comments=True)
    pairs: Pairs = []
    i = next((n for n, t in enumerate(tokens) if t.startswith("--")), len(tokens))
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            continue  # a second command's words, a stray value
        flag, has_value, inline = token[2:].partition("=")
        value: Any = inline
        if not has_value:
            value = tokens[i] if i < len(tokens) and not tokens[i].startswith("--") else True
            i += value is not True
        pairs.append((flag.replace("-", "_"), value))
    return pairs


def read_musubi(data: dict[str, Any]) -> tuple[Pairs, list[str]]:
    """A musubi-tuner TOML: ``[general]`` and the first ``[[datasets]]`` (its dataset config),
    and training arguments (its ``--config_file``: top-level keys, or keys in tables such as
    ``[optimizer_arguments]``, which only group them)."""
    notes: list[str] = []
    datasets = data.get("datasets") or []
    if len(datasets) > 1:
        notes.append(f"datasets: {len(datasets) - 1} dataset(s) after the first (diffsynth train trains on one)")
    dataset = {**(data.get("general") or {}), **(datasets[0] if datasets else {})}
    pairs: Pairs = []
    for key, value in data.items():  # training arguments: flat, or in sections (kohya's style)
        if key not in ("general", "datasets"):
            pairs += list(value.items()) if isinstance(value, dict) else [(key, value)]
    resolution = dataset.pop("resolution", None)
    if resolution is not None:
        w, h = (resolution, resolution) if isinstance(resolution, int) else resolution
        if dataset.get("enable_bucket"):
            pairs.append(("max_pixels", int(w) * int(h)))
        else:
            pairs += [("width", int(w)), ("height", int(h))]
    return pairs + list(dataset.items()), notes


def read_aitk(data: dict[str, Any]) -> tuple[Pairs, list[str]]:
    """An ai-toolkit job: ``config.process[0]``'s sections, through :data:`AITK`."""
    process = ((data.get("config") or {}).get("process") or [{}])[0]
    flat = dict(_flatten(process))
    datasets = process.get("datasets") or [{}]
    flat |= {f"datasets.{k}": v for k, v in _flatten(datasets[0])}
    pairs: Pairs = []
    notes = [f"datasets: {len(datasets) - 1} dataset(s) after the first"] if len(datasets) > 1 else []
    if process.get("training_folder") and (data.get("config") or {}).get("name"):
        pairs.append(("output", str(Path(process["training_folder"]) / data["config"]["name"])))
    ext = flat.pop("datasets.caption_ext", None)
    if ext:
        pairs.append(("caption_extension", ext if str(ext).startswith(".") else f".{ext}"))
    resolution = flat.pop("datasets.resolution", None)
    if resolution:
        side = max(resolution) if isinstance(resolution, list) else int(resolution)
        pairs.append(("max_pixels", side * side))
    pairs += _aitk_model(flat)
    for key, value in flat.items():
        if key in ("training_folder", "device", "type") or key.startswith("datasets.") and key not in AITK:
            if key.startswith("datasets."):
                notes.append(f"{key}: not converted")
            continue
        target, why = AITK.get(key, (None, "not converted"))
        value = AITK_VALUES.get(key, {}).get(str(value).lower(), value) if key in AITK_VALUES else value
        pairs.append((f"aitk:{target}", value) if target else (f"aitk-none:{key}", why))
    return pairs, notes


def _aitk_model(flat: dict[str, Any]) -> Pairs:
    """The family (``model.arch`` / ``model.is_flux``) and a local model folder; a hub id in
    ``name_or_path`` is the family's default download here, so it is left out."""
    arch = "flux" if flat.pop("model.is_flux", False) else str(flat.pop("model.arch", "")).lower()
    pairs: Pairs = [("aitk:model", AITK_FAMILIES[arch])] if arch in AITK_FAMILIES else []
    name = flat.pop("model.name_or_path", None)
    if name and Path(str(name)).is_dir():
        pairs.append(("aitk:model_path", str(name)))
    elif name:
        pairs.append(("aitk-none:model.name_or_path", f"{name} is a hub id: --model uses the family's default files"))
    return pairs


def _flatten(section: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in section.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        elif key != "datasets":
            yield f"{prefix}{key}", value


def convert(pairs: Pairs) -> Conversion:
    """Our settings from peer ``(name, value)`` pairs; the rest left out, with why."""
    from ..training.settings import BY_NAME

    out = Conversion()
    for key, value in pairs:
        if key.startswith("aitk-none:"):
            out.left_out.append(f"{key[10:]}: {value}")
            continue
        name = key[5:] if key.startswith("aitk:") else key
        peer = PEERS.get(name)
        target = name if key.startswith("aitk:") and name in BY_NAME else target_of(name)
        if target is None:
            why = peer.note if peer and peer.note else "no equivalent in diffsynth train"
            out.left_out.append(f"{name}: {why}")
            continue
        converted = peer.convert(value) if peer and peer.convert else {target: value}
        if not converted:
            out.left_out.append(f"{name} = {value!r}: no equivalent value")
        for our, raw in converted.items():
            out.settings[our] = _typed(BY_NAME[our], raw)
    return out


def _typed(setting: Any, value: Any) -> Any:
    """A value as the setting's type (command-line values are strings)."""
    if setting.type is bool:
        return value is True or str(value).lower() in ("1", "true", "yes", "on")
    if setting.type in (int, float) and isinstance(value, str):
        number = float(value)
        return int(number) if setting.type is int and number.is_integer() else setting.type(number)
    if setting.type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if setting.type is str and isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value) if setting.type is str else value


def checked(conversion: Conversion, where: str) -> Conversion:
    """Settings that ``--config`` would refuse (a wrong type, out of range) move to left_out."""
    from ..errors import ConfigError
    from ..training.settings import BY_NAME

    for name, value in list(conversion.settings.items()):
        try:
            BY_NAME[name].check_type(value, name)
            BY_NAME[name].check(value, name)
        except ConfigError as error:
            del conversion.settings[name]
            conversion.left_out.append(f"{name}: {error} (from {where})")
    return conversion


def to_toml(conversion: Conversion, source: str) -> str:
    """The TOML text: a header naming the source and what was left out, then the settings."""
    lines = [f"# diffsynth train settings converted from {source} by `diffsynth convert-config`"]
    if conversion.left_out:
        lines.append("# no equivalent in diffsynth train:")
        lines += [f"#   {item}" for item in conversion.left_out]
    if "model" not in conversion.settings:
        lines.append('# model = "..."  (required: `diffsynth models` lists the families)')
    lines += [f"{name} = {_toml_value(value)}" for name, value in conversion.settings.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def detect(path: Path, text: str) -> str:
    if path.suffix.lower() in (".yaml", ".yml"):
        return "ai-toolkit"
    if path.suffix.lower() == ".toml":
        return "musubi-tuner"
    return "diffsynth-studio"


def guess_model(text: str) -> str | None:
    """The family a DiffSynth-Studio script trains, from its paths (examples/qwen_image/...)."""
    lowered = text.lower()
    for needles, family in ((("controlnet",), "qwen-image-controlnet"), (("vace",), "wan-vace"),
                            (("qwen_image", "qwen-image"), "qwen-image"), (("flux",), "flux-dev")):  # fmt: skip
        if any(n in lowered for n in needles) and (family != "qwen-image-controlnet" or "qwen" in lowered):
            return family
    return None


def _load(path: Path, kind: str, text: str) -> Any:
    from ..errors import ConfigError

    try:
        if kind == "ai-toolkit":
            import yaml  # type: ignore[import-untyped]  # PyYAML: accelerate's and huggingface_hub's

            return yaml.safe_load(text) or {}
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        return tomllib.loads(text)
    except Exception as exc:  # yaml's and tomllib's parse errors: the file is not what it claims
        raise ConfigError(f"{path} is not a valid {kind} file: {' '.join(str(exc).split())}") from exc


def convert_file(path: Path, source: str = "auto") -> tuple[str, Conversion]:
    """(TOML text, the conversion) of a peer's file."""
    from ..errors import ConfigError

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    kind = detect(path, text) if source == "auto" else source
    notes: list[str] = []
    if kind == "ai-toolkit":
        pairs, notes = read_aitk(_load(path, kind, text))
    elif kind == "musubi-tuner":
        pairs, notes = read_musubi(_load(path, kind, text))
    else:
        pairs = read_arg_list(text)
        pairs, notes = _with_dataset_config(pairs, path.parent)
    conversion = convert(pairs)
    conversion.left_out = notes + conversion.left_out
    model = guess_model(text) if kind == "diffsynth-studio" else None
    if model and "model" not in conversion.settings:
        conversion.settings = {"model": model, **conversion.settings}
    return to_toml(checked(conversion, str(path)), f"{kind} file {path.name}"), conversion


def _with_dataset_config(pairs: Pairs, folder: Path) -> tuple[Pairs, list[str]]:
    """A musubi/kohya command line's ``--dataset_config FILE``, read in where it exists."""
    for index, (key, value) in enumerate(pairs):
        candidates = [Path(str(value)), folder / str(value)]
        found = next((c for c in candidates if key == "dataset_config" and c.is_file()), None)
        if found is not None:
            dataset, notes = read_musubi(_load(found, "musubi-tuner", found.read_text(encoding="utf-8")))
            return pairs[:index] + dataset + pairs[index + 1 :], notes
    return pairs, []


@click.command("convert-config")
@click.argument("peer_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "source", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="the file's trainer (auto: .yaml ai-toolkit, .toml musubi-tuner, else a DiffSynth-Studio argument list)")  # fmt: skip
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the TOML here (default: print it)")  # fmt: skip
def convert_config(peer_file: Path, source: str, output: Path | None) -> None:
    """Turn a DiffSynth-Studio argument list, a musubi-tuner TOML or an ai-toolkit YAML into a
    `diffsynth train --config` TOML, naming what has no equivalent."""
    text, conversion = convert_file(peer_file, source)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({len(conversion.settings)} setting(s))", err=True)
    for item in conversion.left_out:
        click.echo(f"not converted: {item}", err=True)
