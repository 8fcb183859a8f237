"""Fakes shared by the platform tests: installed distributions and plugin sources.

A fake distribution is what pip leaves in site-packages: a module plus a
``NAME-VERSION.dist-info`` folder with ``METADATA`` and ``entry_points.txt``; put its folder
on ``sys.path`` (or ``PYTHONPATH``) and ``importlib.metadata`` finds it as it finds real ones.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from diffsynth_core.plugins import PluginManager


def write_dist(site: Path, dist: str, plugins: dict[str, str], version: str = "1.0") -> None:
    """Write distribution ``dist`` into ``site``: one module and one entry point per plugin.

    ``plugins`` maps an entry-point name to the source of the module it points at; the module
    is named after the entry point (``toy-a`` -> ``toy_a``).
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[diffsynth]"]
    for name, source in plugins.items():
        module = name.replace("-", "_")
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def load(*allow: str) -> PluginManager:
    """A manager with the built-ins and only the entry points named in ``allow``."""
    manager = PluginManager()
    manager.load_builtins()
    manager.load_entry_points(set(allow))
    manager.run_registration()
    return manager


FAMILY_PLUGIN = """
from diffsynth_core import ModelFamily, hookimpl

@hookimpl
def diffsynth_register_models(register):
    register(ModelFamily(name={family!r}, description="a toy family"))
"""


def family_plugin(family: str) -> str:
    """Source of a plugin module that registers one family called ``family``."""
    return FAMILY_PLUGIN.format(family=family)
