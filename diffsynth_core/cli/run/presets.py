"""Where a run's model files come from: ``--model-path``, ``--preset tiny`` or the hub.

``--preset tiny`` builds the family's tiny model once (``family.build_tiny``) into
``$DIFFSYNTH_CACHE/tiny/<family>-<version>`` (default cache ``~/.cache/diffsynth``), then
loads it through the same ``ModelConfig`` path a user's real weights take.

The build runs under its own fixed seed with every global RNG (python, numpy, torch, CUDA)
restored afterwards: the run that builds the cache must draw the same LoRA initialisation and
noise as every later run of the same command and seed, and the tiny weights must not depend
on whatever seed the caller had set.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import ConfigError

PRESETS = ("tiny",)
# --transformer / --text-encoder / --vae FILE: the component each replaces with one file
COMPONENT_FLAGS = {"transformer": "dit", "text_encoder": "text_encoder", "vae": "vae"}
TINY_SEED = 0  # the tiny weights are the same on every machine, whatever the run's --seed


def cache_root() -> Path:
    return Path(
        os.environ.get("DIFFSYNTH_CACHE") or Path.home() / ".cache" / "diffsynth"
    ).expanduser()


def tiny_folder(family: Any) -> Path:
    """The family's tiny model on disk, built on first use (safe when processes race)."""
    folder = cache_root() / "tiny" / f"{family.name}-{family.version or '0'}"
    if (folder / ".complete").exists():
        return folder
    if family.build_tiny is None:
        raise ConfigError(
            f"model family {family.name!r} has no tiny preset; give --model-path instead"
        )
    tmp = folder.parent / f".tmp-{uuid.uuid4().hex[:8]}-{folder.name}"
    tmp.mkdir(parents=True)
    try:
        with own_random_state(TINY_SEED):
            family.build_tiny(tmp)
        (tmp / ".complete").touch()
        if folder.exists() and not (folder / ".complete").exists():
            shutil.rmtree(folder)  # a build that was killed before it finished
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / ".complete").exists():  # else another process built it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@contextmanager
def own_random_state(seed: int) -> Iterator[None]:
    """Run the body seeded with ``seed``; afterwards every global RNG is as it was before."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def model_configs(
    family: Any,
    model_path: str | None,
    preset: str | None,
    allow_pickle: bool = False,
    files: dict[str, str | None] | None = None,
) -> tuple[dict[str, Any], str]:
    """(component -> ModelConfig, a description of where the files are); ``files``: the
    single-file checkpoints given by flag (``{"transformer": FILE}``), each in place of its
    component's files."""
    from ...pipeline import resolve_model_configs

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is unknown; presets: {', '.join(PRESETS)}")
    if preset and model_path:
        raise ConfigError("give either --preset or --model-path, not both")
    if preset == "tiny":
        model_path = str(tiny_folder(family))
    configs = resolve_model_configs(family, model_path, allow_pickle)
    for flag, file in (files or {}).items():
        if file is not None:
            component = _component(family, flag, file)
            configs[component] = _single_file_config(flag, file, configs[component], allow_pickle)
    where = (
        f"{model_path} (preset {preset})"
        if preset
        else model_path or ", ".join(sorted({f.model_id for f in family.model_files.values()}))
    )
    return configs, where


def _component(family: Any, flag: str, file: str) -> str:
    component = COMPONENT_FLAGS[flag]
    if component not in family.model_files:
        option = "--" + flag.replace("_", "-")
        raise ConfigError(
            f"{option} {file}: model family {family.name!r} has no {component} component "
            f"(its components: {', '.join(sorted(family.model_files))})"
        )
    return component


def _single_file_config(flag: str, file: str, like: Any, allow_pickle: bool) -> Any:
    from ...loading import ModelConfig

    option, path = "--" + flag.replace("_", "-"), Path(file).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"{option} {file} is a folder: give one checkpoint file (.safetensors), or the "
            "repository folder as --model-path"
        )
    if not path.is_file():
        raise ConfigError(f"{option} {file}: no such file")
    return ModelConfig(path=str(path), allow_pickle=allow_pickle, single_file=True, like=like)
