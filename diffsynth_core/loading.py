"""ModelConfig: a local path, or a hub id plus a file pattern, turned into files on disk.

Weights are read as safetensors. Pickle-based files (``.bin .pt .ckpt .pth``) can execute code
when loaded, so they are refused unless the user opts in with ``allow_pickle=True`` (then they
are read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelFileError, PickleRefusedError

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
        from modelscope import snapshot_download  # type: ignore[import-not-found]
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

