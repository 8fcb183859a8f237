"""What a cache's tensors depend on, recorded when it is built and compared before training.

:func:`settings_fingerprint` covers the family and its version, the model files of every
component (size and mtime of each local file; the hub id and pattern of a hub model, so that
nothing is downloaded to compare), the pipeline dtype, the resolution and bucket settings and
the family options; :func:`unit_fingerprint` the plan and the settings the cached units read.
:func:`row_fingerprints` hashes each data row: its metadata fields and the contents of its
files. :func:`differences` says, one phrase each, what changed between two fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelFileError

ROW_LABEL_LIMIT = 5  # rows named in one error line


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def model_files(configs: Mapping[str, Any]) -> dict[str, Any]:
    """component -> {file: [size, mtime_ns]} (local), or the hub id and pattern."""
    out: dict[str, Any] = {}
    for component, config in sorted(configs.items()):
        if config.path is None:
            out[component] = {"hub": config.describe()}
            continue
        try:
            paths = sorted(config.resolve())
        except ModelFileError:  # a component the loader may do without (a default ControlNet)
            out[component] = {"absent": config.describe()}
            continue
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()
        # relative names: the same files in another place are the same model
        out[component] = {
            str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths
        }
    return out


def settings_fingerprint(run: Any, configs: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """Everything but the rows and the plan (known before any model is loaded)."""
    c, family = run.config, run.family
    return {
        "family": family.name,
        "family_version": family.version,
        "dtype": str(dtype),
        "model_files": model_files(configs),
        "resolution": {
            "height": c.height,
            "width": c.width,
            "max_pixels": c.max_pixels,
            "num_frames": c.num_frames,
            "division_factor": family.defaults.division_factor,
            "data_file_keys": c.data_file_keys,
        },  # fmt: skip
        "family_options": {k: str(v) for k, v in sorted(run.raw_options.items())},
    }


def unit_fingerprint(plan: Any, pipe: Any, extra_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The plan, and the run settings (extra inputs) that the cached units read."""
    cached = set(plan.cached)
    read = {n for u in pipe.units if u.name in cached for n in u.input_params}
    return {
        "plan": plan.as_json(),
        "unit_settings": {k: repr(v) for k, v in sorted(extra_inputs.items()) if k in read},
    }


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def _paths(value: Any, base: Path) -> list[Path]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [Path(v) if Path(str(v)).is_absolute() else base / str(v) for v in values if v]


def row_fingerprints(dataset: Any) -> list[dict[str, Any]]:
    """Per metadata row: a label (its first file), the hash of its fields and of its files."""
    out = []
    for index, row in enumerate(dataset.rows):
        files = {}
        for column in dataset.file_columns(row):
            for path in _paths(row.get(column), Path(dataset.base_path)):
                files[f"{column}:{path.name}"] = _file_digest(path) if path.is_file() else "missing"
        columns = dataset.file_columns(row)
        label = next((str(row.get(c)) for c in columns if row.get(c)), f"row {index}")
        fields = {k: v for k, v in row.items() if k not in columns}
        out.append(
            {"label": label, "fields": digest(fields), "files": digest(files), "file_list": files}
        )
    return out


def row_hash(row: Mapping[str, Any]) -> str:
    return digest([row["fields"], row["files"]])


def _changed_keys(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _changed_keys(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if old == new else [f"{prefix} ({_short(old)} -> {_short(new)})"]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed, one phrase per changed setting; model files are named by component."""
    found = []
    for key in sorted(set(old) | set(new)):
        if key == "model_files":
            changed = [c for c in sorted(set(old.get(key, {})) | set(new.get(key, {})))
                       if old.get(key, {}).get(c) != new.get(key, {}).get(c)]  # fmt: skip
            found += [f"the {c} model files" for c in changed]
        elif old.get(key) != new.get(key):
            found += _changed_keys(old.get(key), new.get(key), key)
    return found


def row_differences(
    old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """(rows that changed, one phrase each; labels of rows the cache does not have)."""
    changed = []
    for index, (was, now) in enumerate(zip(old, new, strict=False)):
        if was["fields"] != now["fields"]:
            changed.append(f"row {index} ({now['label']}): its caption or other fields")
        elif was["files"] != now["files"]:
            files = [
                f.split(":", 1)[1]
                for f, h in now["file_list"].items()
                if was["file_list"].get(f) != h
            ]
            changed.append(f"row {index}: the contents of {', '.join(files) or 'its files'}")
    missing = [f"{i} ({row['label']})" for i, row in enumerate(new) if i >= len(old)]
    return changed, missing


def named(items: list[str]) -> str:
    shown = "; ".join(items[:ROW_LABEL_LIMIT])
    return shown + (
        f" and {len(items) - ROW_LABEL_LIMIT} more" if len(items) > ROW_LABEL_LIMIT else ""
    )
