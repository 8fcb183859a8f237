"""The plugin author's kit: pytest fixtures for testing a diffsynth family plugin.

Installed with diffsynth-core as the pytest plugin ``diffsynth`` (entry point group
``pytest11``), so a plugin's tests use the fixtures without importing anything::

    def test_my_family_conforms(diffsynth_plugin_manager, tmp_path):
        diffsynth_plugin_manager("diffsynth_myfamily.plugin")
        check_family_conformance("my-family", workdir=tmp_path)

    def test_trains_from_the_cli(diffsynth_run_train, diffsynth_image_dataset):
        run = diffsynth_run_train("my-family", "--max-steps", "2",
                                  dataset=diffsynth_image_dataset, plugins="myfamily")
        assert run.exit_code == 0, run.output
        assert "final.safetensors" in run.files and len(run.losses) == 2

Every fixture name starts with ``diffsynth_`` so none clashes with a project's own. The
module imports no torch (pytest imports it at startup for every test run in the venv);
fixtures import what they need when they run.
"""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest


@dataclass
class TrainRun:
    """What one ``diffsynth train`` subprocess left: exit status, output, files, losses."""

    exit_code: int
    output: str  # stdout then stderr
    folder: Path  # the run's --output folder
    files: list[str] = field(default_factory=list)  # paths under ``folder``, relative, sorted
    losses: list[float] = field(default_factory=list)  # logs/metrics.csv, one per logged step


def _resolve_plugin(plugin: Any) -> tuple[str, object]:
    """A plugin object, module, module path or ``diffsynth`` entry-point name -> (name, object)."""
    if not isinstance(plugin, str):
        return getattr(plugin, "__name__", type(plugin).__name__), plugin
    for ep in metadata.entry_points(group="diffsynth"):
        if ep.name == plugin:
            return ep.name, ep.load()
    try:
        return plugin, importlib.import_module(plugin)
    except ModuleNotFoundError as exc:
        raise pytest.UsageError(
            f"diffsynth_plugin_manager: {plugin!r} is neither an installed diffsynth entry "
            f"point nor an importable module ({exc})"
        ) from None


@pytest.fixture
def diffsynth_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """A factory: ``diffsynth_plugin_manager(*plugins)`` makes a fresh plugin manager holding
    only the built-ins and ``plugins`` and installs it as the process-wide one.

    Each plugin is a module, an object with hook implementations, a module path
    (``"diffsynth_foo.plugin"``) or the name of an installed ``diffsynth`` entry point
    (``"foo"``). Other installed plugins are not loaded, so they cannot interfere; a broken
    plugin fails the test with its error. ``DIFFSYNTH_LOAD_PLUGINS`` is set to the given
    names for the test, so subprocesses see the same selection. The normal manager comes
    back after the test.
    """
    from diffsynth_core.plugins import PluginManager, reset_plugin_manager

    def make(*plugins: Any) -> PluginManager:
        manager = PluginManager()
        manager.load_builtins()
        manager.run_registration(list(manager.plugins))  # the built-ins' losses and units
        resolved = [_resolve_plugin(p) for p in plugins]
        for name, plugin in resolved:
            manager.register_object(plugin, name)
        broken = {n: i.error for n, i in manager.plugins.items() if i.error}
        if broken:
            pytest.fail(f"broken plugin(s): {broken}", pytrace=False)
        monkeypatch.setenv("DIFFSYNTH_LOAD_PLUGINS", ",".join(n for n, _ in resolved))
        reset_plugin_manager(manager)
        return manager

    yield make
    reset_plugin_manager(None)


@pytest.fixture
def diffsynth_image_dataset(tmp_path: Path) -> Path:
    """A folder in ``tmp_path`` with 4 coloured 64x64 PNGs and ``metadata.csv`` (image, prompt)."""
    from diffsynth_core.testing.data import make_image_dataset

    return make_image_dataset(tmp_path / "diffsynth-images", n=4, size=64)


def write_video_dataset(folder: Path, n: int = 2, frames: int = 9, size: int = 32) -> Path:
    """``n`` GIF clips of ``frames`` frames (a light square moving left to right on a flat
    colour) and ``metadata.csv`` (video, prompt). GIF because PIL reads it: no ffmpeg needed."""
    from PIL import Image, ImageDraw

    from diffsynth_core.testing.data import COLOURS

    folder.mkdir(parents=True, exist_ok=True)
    side = size // 3
    rows = []
    for i in range(n):
        name, colour = COLOURS[i % len(COLOURS)]
        light = tuple(min(255, c + 80) for c in colour)
        clip = []
        for k in range(frames):
            frame = Image.new("RGB", (size, size), colour)
            x = k * (size - side) // max(1, frames - 1)
            ImageDraw.Draw(frame).rectangle([x, side, x + side - 1, 2 * side - 1], fill=light)
            clip.append(frame)
        clip[0].save(folder / f"video_{i}.gif", save_all=True, append_images=clip[1:], duration=125)
        rows.append(
            {"video": f"video_{i}.gif", "prompt": f"a {name} picture, a square moving right"}
        )
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "prompt"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture
def diffsynth_video_dataset(tmp_path: Path) -> Path:
    """A folder in ``tmp_path`` with 2 GIF clips (9 frames, 32x32) and ``metadata.csv``
    (video, prompt)."""
    return write_video_dataset(tmp_path / "diffsynth-videos")


def _losses(folder: Path) -> list[float]:
    path = folder / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [float(r["loss"]) for r in csv.DictReader(handle) if r.get("step")]


@pytest.fixture
def diffsynth_run_train(tmp_path: Path) -> Callable[..., TrainRun]:
    """A callable that runs the real ``diffsynth train`` in a subprocess and returns a
    :class:`TrainRun`::

        run = diffsynth_run_train("my-family", "--max-steps", "2", dataset=folder)

    ``model`` is ``--model``; ``flags`` go to the command as given; ``dataset`` is
    ``--dataset``; ``preset`` is ``--preset`` (default ``tiny``: the family's
    ``build_tiny``, built into a cache in ``tmp_path``, so nothing is downloaded); ``output``
    defaults to a new folder in ``tmp_path``; ``plugins`` (comma-separated entry-point
    names) sets ``DIFFSYNTH_LOAD_PLUGINS`` for the run; ``env`` adds variables; ``command``
    replaces ``python -m diffsynth_core.cli.main`` (a script that registers in-process
    plugins first, say). The run is
    offline (``HF_HUB_OFFLINE=1``), single-threaded, and killed after ``timeout`` seconds.
    """
    counter = iter(range(1_000_000))

    def run(
        model: str,
        *flags: Any,
        dataset: str | Path | None = None,
        preset: str | None = "tiny",
        output: str | Path | None = None,
        plugins: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        command: list[str] | None = None,
    ) -> TrainRun:
        folder = Path(output) if output else tmp_path / f"diffsynth-run-{next(counter)}"
        prefix = command or [sys.executable, "-m", "diffsynth_core.cli.main"]
        args = [*prefix, "train", "--model", model]
        args += ["--preset", preset] if preset else []
        args += ["--dataset", str(dataset)] if dataset is not None else []
        args += [*map(str, flags), "--output", str(folder)]
        full_env = {
            **os.environ,
            "DIFFSYNTH_CACHE": os.environ.get("DIFFSYNTH_CACHE", str(tmp_path / "diffsynth-cache")),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            **({"DIFFSYNTH_LOAD_PLUGINS": plugins} if plugins is not None else {}),
            **(env or {}),
        }
        done = subprocess.run(
            args, capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
        files = sorted(
            str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
        ) if folder.is_dir() else []  # fmt: skip
        return TrainRun(done.returncode, done.stdout + done.stderr, folder, files, _losses(folder))

    return run
