"""Fakes and checks for tests, shipped in the package so plugin authors reuse them.

* :class:`ToyPlugin` / :class:`ToyPipeline` -- the ``toy`` family: a complete plugin whose
  models train in milliseconds on a CPU (see :mod:`.toy`).
* :func:`make_image_dataset` -- coloured PNG images and a metadata.csv in a folder.
* :func:`check_family_conformance` -- the checks every family must pass (see :mod:`.conformance`).
* :func:`use_toy_plugin` -- make the process-wide plugin manager the built-ins plus the toy.

Names are resolved on first use, so importing the package (as pytest does for the author
kit, :mod:`.pytest_plugin`, at startup) does not import torch; most of the names do.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it (imported when first asked for)
_LAZY = {
    "ConformanceError": ".conformance",
    "ConformanceReport": ".conformance",
    "check_family_conformance": ".conformance",
    "make_image": ".data",
    "make_image_dataset": ".data",
    "TOY_FAMILY": ".toy",
    "ToyPipeline": ".toy",
    "ToyPlugin": ".toy",
    "build_tiny": ".toy",
    "load_toy_pipeline": ".toy",
}

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
    from .toy import ToyPlugin

    manager = PluginManager.with_plugins(ToyPlugin(), *more_plugins)
    reset_plugin_manager(manager)
    return manager


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
