"""The cache folder: one safetensors shard per data row, and ``index.json`` written last.

    CACHE/rows/row-000000.safetensors   the entries of row 0 (tensors + JSON structure in the
                                        header metadata: row hash, settings digest, keys)
    CACHE/rows/variant-<key>.safetensors  an entry shared by rows (the empty caption that a
                                        dropped caption trains with), named by its key
    CACHE/index.json                    fingerprint, plan, rows, the command that built it

Shards are written through :func:`~diffsynth_core.training.atomic.atomic_write` (a
temporary name, then an atomic rename), so a shard that exists is complete; a killed run
leaves only ``.tmp-*`` files, which the next run removes. A shard whose header matches the
row's current hash and settings is kept on the next run (resume). ``index.json`` exists only
once every row has its shard: a cache without it is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..training.atomic import atomic_write, atomic_write_json, clean_temporaries
from .entries import Entry, pack, unpack

FORMAT = 1
INDEX = "index.json"
META_KEY = "diffsynth-cache"


class CacheFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.rows = self.root / "rows"

    def shard(self, row: int) -> Path:
        return self.rows / f"row-{row:06d}.safetensors"

    def prepare(self) -> None:
        self.rows.mkdir(parents=True, exist_ok=True)
        clean_temporaries(self.rows)  # what a killed run was writing

    # -- shards -------------------------------------------------------------------------------

    def variant(self, key: str) -> Path:
        return self.rows / f"variant-{key}.safetensors"

    def variants(self) -> list[Path]:
        return sorted(self.rows.glob("variant-*.safetensors"))

    def header(self, row: int | Path) -> dict[str, Any] | None:
        """A shard's metadata, or None when it does not exist (or is not ours)."""
        from safetensors import safe_open

        path = self.shard(row) if isinstance(row, int) else row
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
        except Exception:  # an unreadable shard is rebuilt, never read
            return None
        return json.loads(meta[META_KEY]) if META_KEY in meta else None

    def done(self, row: int, row_hash: str, settings: str) -> bool:
        header = self.header(row)
        return (
            header is not None and header["row_hash"] == row_hash and header["settings"] == settings
        )

    def write(
        self,
        row: int,
        row_hash: str,
        settings: str,
        entries: Iterable[tuple[str, str, Entry]],
        bad: str | None = None,
    ) -> Path:
        """Row ``row``'s shard: its (key, unit name, entry) list; ``bad``: why it was skipped."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        keys = {}
        for key, unit, entry in entries:
            keys[key] = {"unit": unit, "structure": pack(entry, key, tensors, unit)}
        header = {"row": row, "row_hash": row_hash, "settings": settings, "keys": keys, "bad": bad}
        metadata = {META_KEY: json.dumps(header, sort_keys=True)}
        return atomic_write(
            self.shard(row), lambda tmp: save_file(tensors, str(tmp), metadata=metadata)
        )

    def write_variant(self, key: str, settings: str, unit: str, entry: Entry) -> Path:
        """A unit call's entry shared by rows (the empty caption a dropped caption trains
        with), named by its key: every process that meets it writes the same file."""
        from safetensors.torch import save_file

        path = self.variant(key)
        header = self.header(path)
        if header is not None and header["settings"] == settings:
            return path
        tensors: dict[str, torch.Tensor] = {}
        keys = {key: {"unit": unit, "structure": pack(entry, key, tensors, unit)}}
        meta = {META_KEY: json.dumps({"settings": settings, "keys": keys}, sort_keys=True)}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    # -- the index ----------------------------------------------------------------------------

    def write_index(self, index: dict[str, Any]) -> None:
        atomic_write_json(self.root / INDEX, {"format": FORMAT, **index})

    def read_index(self, what: str = "--cache") -> dict[str, Any]:
        if not self.root.is_dir():
            raise ConfigError(
                f"{what} {self.root}: no such folder; build it with `diffsynth cache --model NAME "
                f"--dataset DIR --output {self.root}`"
            )
        path = self.root / INDEX
        if not path.is_file():
            hint = (
                "a cache run that did not finish" if self.rows.is_dir() else "not a diffsynth cache"
            )
            raise ConfigError(
                f"{what} {self.root} has no {INDEX} ({hint}); run `diffsynth cache ... --output "
                f"{self.root}` (it resumes where it stopped)"
            )
        try:
            index = json.loads(path.read_text())
        except ValueError as error:
            raise ConfigError(
                f"{what} {path} is not valid JSON ({error}); rebuild the cache"
            ) from error
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ConfigError(
                f"{what} {self.root} was written by another diffsynth version: rebuild it"
            )
        return index


class ShardStore:
    """key -> entry, read from the shards of a finished cache (tensors read on demand)."""

    def __init__(
        self, folder: CacheFolder, rows: Iterable[int], settings: str | None = None
    ) -> None:
        self.folder = folder
        self.where: dict[str, tuple[Path, dict[str, Any]]] = {}
        shards = [folder.shard(row) for row in rows] + folder.variants()
        for path in shards:
            header = folder.header(path) or {}
            if settings is not None and header.get("settings") != settings:
                continue  # (a variant left by a cache of other settings)
            for key, item in header.get("keys", {}).items():
                self.where[key] = (path, item["structure"])

    def __len__(self) -> int:
        return len(self.where)

    def get(self, key: str, device: Any) -> Entry | None:
        from safetensors import safe_open

        found = self.where.get(key)
        if found is None:
            return None
        path, structure = found
        with safe_open(str(path), framework="pt") as handle:
            return unpack(structure, handle.get_tensor, device)
