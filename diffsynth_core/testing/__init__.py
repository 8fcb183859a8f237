"""Fakes and checks for tests, shipped in the package so plugin authors reuse them.

* :class:`ToyPlugin` / :class:`ToyPipeline` -- the ``toy`` family: a complete plugin whose
  models train in milliseconds on a CPU (see :mod:`.toy`).
* :func:`make_image_dataset` -- coloured PNG images and a metadata.csv in a folder.
* :func:`check_family_conformance` -- the checks every family must pass (see :mod:`.conformance`).
* :func:`use_toy_plugin` -- make the process-wide plugin manager the built-ins plus the toy.

Importing this package imports torch.
"""

from __future__ import annotations

from typing import Any

from .conformance import ConformanceError, ConformanceReport, check_family_conformance
from .data import make_image, make_image_dataset
from .toy import TOY_FAMILY, ToyPipeline, ToyPlugin, build_tiny, load_toy_pipeline

__all__ = [
    "TOY_FAMILY",
    "ConformanceError",
    "ConformanceReport",
    "ToyPipeline",
    "ToyPlugin",
    "build_tiny",
    "check_family_conformance",
    "load_toy_pipeline",
    "make_image",
    "make_image_dataset",
    "use_toy_plugin",
]


def use_toy_plugin(*more_plugins: object) -> Any:
    """Install a plugin manager holding the built-ins, the toy plugin and ``more_plugins``.

    Entry points are not read, so installed families do not interfere. Returns the manager;
    ``diffsynth_core.plugins.reset_plugin_manager()`` goes back to the normal one.
    """
    from ..plugins import PluginManager, reset_plugin_manager

    manager = PluginManager.with_plugins(ToyPlugin(), *more_plugins)
    reset_plugin_manager(manager)
    return manager
