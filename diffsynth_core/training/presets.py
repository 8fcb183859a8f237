"""Where a run's model files come from: ``--model-path``, ``--preset tiny`` or the hub.

``--preset tiny`` builds the family's tiny model once (``family.build_tiny``) into
``$DIFFSYNTH_CACHE/tiny/<family>-<version>`` (default cache ``~/.cache/diffsynth``), then
loads it through the same ``ModelConfig`` path a user's real weights take.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..errors import ConfigError

PRESETS = ("tiny",)


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


def model_configs(
    family: Any, model_path: str | None, preset: str | None, allow_pickle: bool = False
) -> tuple[dict[str, Any], str]:
    """(component -> ModelConfig, a description of where the files are)."""
    from ..pipeline import resolve_model_configs

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is unknown; presets: {', '.join(PRESETS)}")
    if preset and model_path:
        raise ConfigError("give either --preset or --model-path, not both")
    if preset == "tiny":
        model_path = str(tiny_folder(family))
    configs = resolve_model_configs(family, model_path, allow_pickle)
    where = (
        f"{model_path} (preset {preset})"
        if preset
        else model_path or ", ".join(sorted({f.model_id for f in family.model_files.values()}))
    )
    return configs, where
