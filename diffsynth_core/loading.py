"""ModelConfig: a local path, or a hub id plus a file pattern, turned into files on disk.

Weights are read as safetensors. Pickle-based files (``.bin .pt .ckpt .pth``) can execute code
when loaded, so they are refused unless the user opts in with ``allow_pickle=True`` (then they
are read with ``torch.load(weights_only=True)``). Every safetensors file's header is checked
against the file's size when it is resolved, so a truncated download is one error naming the
file, before any library reads it. :func:`family_loading` turns what a family's loader raises on
files of the wrong model (another family's folder) into one error naming the folder, what it
holds and what the family expects.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import DiffSynthError, ModelFileError, PickleRefusedError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pth")
WEIGHT_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES


@dataclass
class ModelConfig:
    """Where one component's weights come from.

    Give either ``path`` (a file, a list of shard files, or a folder) or ``model_id`` with
    ``origin_file_pattern`` (a glob inside the repository; a trailing ``/`` selects a whole
    folder, e.g. ``tokenizer/``). ``path`` plus ``origin_file_pattern`` globs inside a local
    copy of a repository.
    """

    path: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None
    model_id: str | None = None
    origin_file_pattern: str | None = None
    allow_pickle: bool = False
    source: str | None = None  # "huggingface" (default) or "modelscope"
    # ``path`` is one checkpoint file of the component (--transformer FILE), read by
    # single_file.load_single_file; ``like``: the repository-layout config it replaces, whose
    # config.json describes the model in the file
    single_file: bool = False
    like: ModelConfig | None = None

    def resolve(self) -> list[Path]:
        """The files of this component on disk (weights and the config files beside them)."""
        if self.path is not None:
            files = self._local_files()
        elif self.model_id is not None:
            files = self._hub_files()
        else:
            raise ModelFileError("ModelConfig needs either path= or model_id=")
        return _check_weights(files, self.allow_pickle, self.describe())

    def folder(self) -> Path:
        """The folder holding this component (what ``from_pretrained`` wants)."""
        files = self.resolve()
        parents = {f.parent for f in files}
        if len(parents) == 1:
            return parents.pop()
        return Path(os.path.commonpath([str(p) for p in parents]))

    def weight_files(self) -> list[Path]:
        return [f for f in self.resolve() if f.suffix in WEIGHT_SUFFIXES]

    def describe(self) -> str:
        if self.path is not None:
            where = str(self.path)
            return f"{where} (pattern {self.origin_file_pattern})" if self.origin_file_pattern else where
        return f"{self.model_id}:{self.origin_file_pattern or '*'}"

    # -- local ---------------------------------------------------------------------------

    def _local_files(self) -> list[Path]:
        paths = self.path if isinstance(self.path, list) else [self.path]
        files: list[Path] = []
        for raw in paths:
            p = Path(raw).expanduser()  # type: ignore[arg-type]
            if p.is_file():
                files.append(p)
            elif p.is_dir():
                files.extend(_glob(p, self.origin_file_pattern))
            else:
                raise ModelFileError(
                    f"model file {p} does not exist. Check the path (or --model-path), or build "
                    "a tiny model with --preset tiny to try things out."
                )
        if not files:
            raise ModelFileError(
                f"no files match {self.describe()}. Expected the official repository layout "
                "(transformer/, text_encoder/, vae/, tokenizer/ ...)."
            )
        return files

    # -- hub -----------------------------------------------------------------------------

    def _hub_files(self) -> list[Path]:
        source = self.source or os.environ.get("DIFFSYNTH_MODEL_SOURCE", "huggingface")
        patterns = _download_patterns(self.origin_file_pattern)
        if source == "modelscope":
            root = _modelscope_download(self.model_id or "", patterns)
        else:
            root = _hf_download(self.model_id or "", patterns)
        files = _glob(root, self.origin_file_pattern)
        if not files:
            raise ModelFileError(
                f"no files match {self.describe()} in {root}. Check the pattern against the "
                "repository's file list."
            )
        return files


def _download_patterns(pattern: str | None) -> list[str]:
    if not pattern:
        return ["*"]
    if pattern.endswith("/"):
        return [pattern + "*"]
    folder = os.path.dirname(pattern)
    side = [f"{folder}/*.json", f"{folder}/*.txt"] if folder else ["*.json"]
    return [pattern, *side]


def _glob(root: Path, pattern: str | None) -> list[Path]:
    if not pattern:
        return sorted(f for f in root.iterdir() if f.is_file())
    if pattern.endswith("/"):
        folder = root / pattern
        if not folder.is_dir():
            return []
        return sorted(f for f in folder.rglob("*") if f.is_file())
    matched = sorted(f for f in root.glob(pattern) if f.is_file())
    if not matched:
        return []
    # the config files beside the weights travel with them (config.json, shard index ...)
    folders = {f.parent for f in matched}
    extra = [f for d in folders for f in d.iterdir() if f.is_file() and f.suffix == ".json"]
    return sorted(set(matched) | set(extra))


def _hf_download(model_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=model_id, allow_patterns=patterns))
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            "HF_HUB_OFFLINE is set and the files are not in the hub cache (HF_HOME)"
            if offline
            else "check the model id and your network, or download the files and pass --model-path"
        )
        raise ModelFileError(
            f"could not get {model_id} ({', '.join(patterns)}): {type(exc).__name__}: {exc}. {hint}."
        ) from exc


def _modelscope_download(model_id: str, patterns: list[str]) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise ModelFileError(
            "ModelScope downloads need the optional extra: pip install 'diffsynth-core[modelscope]'"
        ) from exc
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as exc:
        raise ModelFileError(f"could not get {model_id} from ModelScope: {exc}") from exc


def _check_weights(files: list[Path], allow_pickle: bool, where: str) -> list[Path]:
    safe = [f for f in files if f.suffix in SAFE_SUFFIXES]
    for f in safe:
        check_safetensors(f)
    pickled = [f for f in files if f.suffix in PICKLE_SUFFIXES]
    if pickled and not safe and not allow_pickle:
        raise PickleRefusedError(
            f"{where} holds only pickle weight files ({pickled[0].name} ...), which can run code "
            "when loaded. Convert them to safetensors, or pass allow_pickle=True "
            "(--allow-pickle) if you trust their source."
        )
    if safe:  # a repository with both: never touch the pickle copies
        return [f for f in files if f.suffix not in PICKLE_SUFFIXES]
    return files


def load_state_dict(
    path: str | os.PathLike[str] | list[Any], *, allow_pickle: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Read one file or several shards into one state dict (safetensors; pickle on opt-in)."""
    files = ModelConfig(path=path, allow_pickle=allow_pickle).weight_files()
    state: dict[str, Any] = {}
    for f in files:
        state.update(_load_one(f, device))
    return state


def _load_one(path: Path, device: str) -> dict[str, Any]:
    if path.suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=device)
        except Exception as exc:
            raise ModelFileError(f"{path} is not a readable safetensors file: {exc}") from exc
    import torch

    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path} could not be read with weights_only=True: {exc}") from exc



def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header is unreadable or promises more bytes than the
    file has (a download cut short): libraries report it without the file's name, or not at all."""
    stat = path.stat()
    problem = _safetensors_problem(str(path), stat.st_size, stat.st_mtime_ns)
    if problem:
        raise ModelFileError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {problem}. "
            "Download or export it again."
        )


@lru_cache(maxsize=512)
def _safetensors_problem(path: str, size: int, _mtime: int) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a header"
        length = struct.unpack("<Q", head)[0]
        if length > min(size - 8, 100 * 2**20):
            return f"the header claims {length} bytes, the file has {size}"
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            return f"the header is not JSON ({exc})"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    needed = 8 + length + max(ends, default=0)
    return f"{size} bytes, but its tensors need {needed}" if size < needed else None


# -- loading a family from files ------------------------------------------------------------


@contextmanager
def family_loading(family: Any, configs: Mapping[str, ModelConfig]) -> Iterator[None]:
    """Around a family's loader: files of the wrong model become one ModelFileError.

    A file where a repository folder belongs is refused first. Then what loaders raise when
    the files are another model's -- a config key the class does not take (TypeError), a
    shape that does not fit (diffusers' ValueError, torch's ``load_state_dict``
    RuntimeError), a loader's errno-less OSError -- is reported with the folder, the classes
    its ``config.json`` files name and the layout the family expects. Anything else
    propagates: it is a bug, and its traceback is what a report needs.
    """
    _refuse_file_as_folder(family, configs)
    try:
        yield
    except DiffSynthError:
        raise
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        if not _wrong_files(exc):
            raise
        first = str(exc).split(". ")[0].strip()
        raise ModelFileError(
            f"could not load model family {family.name!r} from {_where(configs)}: "
            f"{type(exc).__name__}: {first}. {_found_classes(family, configs)}"
            f"{_expected(family)}"
        ) from exc


def _wrong_files(exc: BaseException) -> bool:
    text = str(exc)
    if isinstance(exc, TypeError):
        return "unexpected keyword argument" in text
    if isinstance(exc, OSError):
        return exc.errno is None  # with an errno it is the disk's problem (cli/translate.py)
    if isinstance(exc, RuntimeError):
        return any(k in text for k in ("state_dict", "size mismatch", "Missing key", "Unexpected key"))
    return not isinstance(exc, UnicodeDecodeError)  # ValueError: shapes, config JSON


def _refuse_file_as_folder(family: Any, configs: Mapping[str, ModelConfig]) -> None:
    for config in configs.values():
        paths = config.path if isinstance(config.path, list) else [config.path]
        for raw in paths:
            if raw is not None and config.origin_file_pattern and Path(raw).is_file():
                raise ModelFileError(
                    f"{raw} is a file, but --model-path wants a folder: a local copy of the "
                    f"model repository. {_expected(family)}"
                )


def _where(configs: Mapping[str, ModelConfig]) -> str:
    local = sorted({str(c.path) for c in configs.values() if c.path is not None})
    return ", ".join(local) or ", ".join(sorted({c.describe() for c in configs.values()}))


def _found_classes(family: Any, configs: Mapping[str, ModelConfig]) -> str:
    """``The folder holds transformer: QwenImageTransformer2DModel ...`` from its config.json."""
    found = []
    for name, config in configs.items():
        if isinstance(config.path, (str, os.PathLike)) and config.origin_file_pattern:
            sub = os.path.dirname(config.origin_file_pattern.rstrip("/"))
            file = Path(config.path) / sub / "config.json"
            try:
                cls = json.loads(file.read_text(encoding="utf-8")).get("_class_name")
            except (OSError, ValueError, AttributeError):
                continue
            if cls:
                found.append(f"{sub or name}: {cls}")
    if not found:
        return ""
    return f"Its config.json files name {', '.join(found)} (another family's model?). "


def _expected(family: Any) -> str:
    files = getattr(family, "model_files", {})
    layout = "; ".join(f"{f.origin_file_pattern}" for f in files.values())
    origin = ", ".join(sorted({f.model_id for f in files.values()}))
    return f"Family {family.name!r} expects the layout of {origin}: {layout}." if layout else ""
