"""Split-training test helpers: the installed families through the real CLI, in process."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

# one thread: the same float sums in this process and in `accelerate launch` children
torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """DIFFSYNTH_CACHE for the session: each tiny preset is built once."""
    folder = tmp_path_factory.getbasetemp() / "diffsynth-cache"
    before = os.environ.get("DIFFSYNTH_CACHE")
    os.environ["DIFFSYNTH_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("DIFFSYNTH_CACHE", None)
    else:
        os.environ["DIFFSYNTH_CACHE"] = before


def invoke(*args: Any) -> Result:
    """``diffsynth ...`` in this process, with every installed plugin."""
    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager

    manager = build_plugin_manager()
    reset_plugin_manager(manager)
    env = {"DIFFSYNTH_DEBUG": ""}
    return CliRunner().invoke(build_cli(manager), [str(a) for a in args], env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def copy_rows(source: Path, target: Path, rows: int) -> Path:
    """The example dataset with its first ``rows`` rows (files copied: tests change them)."""
    shutil.copytree(source, target)
    lines = (target / "metadata.csv").read_text().splitlines()
    (target / "metadata.csv").write_text("\n".join(lines[: rows + 1]) + "\n")
    return target


def losses(run: Path) -> list[str]:
    with (run / "logs" / "metrics.csv").open() as handle:
        return [row["loss"] for row in csv.DictReader(handle)]


def lora(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "final.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def contents(cache: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index.json, shard name -> (header, tensors)) of a cache folder."""
    from safetensors import safe_open

    index = json.loads((cache / "index.json").read_text())
    index.pop("command")  # names the cache's own folder
    shards = {}
    for shard in sorted((cache / "rows").iterdir()):
        with safe_open(str(shard), framework="pt") as handle:
            shards[shard.name] = (
                handle.metadata(),
                {k: handle.get_tensor(k) for k in handle.keys()},
            )  # noqa: SIM118
    return index, shards


def same_cache(a: Path, b: Path) -> bool:
    (index_a, shards_a), (index_b, shards_b) = contents(a), contents(b)
    if index_a != index_b or shards_a.keys() != shards_b.keys():
        return False
    return all(
        shards_a[n][0] == shards_b[n][0] and same_weights(shards_a[n][1], shards_b[n][1])
        for n in shards_a
    )


class NeverBuilt:
    """Patches model classes so that constructing one is recorded (and fails loudly)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *classes: type) -> None:
        self.built: list[str] = []
        for cls in classes:

            def refuse(self_: Any, *args: Any, _name: str = cls.__name__, **kwargs: Any) -> None:
                self.built.append(_name)
                raise AssertionError(f"{_name} was constructed")

            monkeypatch.setattr(cls, "__init__", refuse)
