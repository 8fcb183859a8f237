"""The public face (``diffsynth_core/__init__.py``, docs/api.md): plugins import only from it.

A plugin package under ``plugins/``, an example under ``examples/`` and the scaffold of
``diffsynth new-plugin`` may import ``from diffsynth_core import NAME`` with NAME in
``__all__``, and the author kit (``diffsynth_core.testing``); nothing else of the core.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from string import Template

import pytest

import diffsynth_core

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_MODULES = {"diffsynth_core", "diffsynth_core.testing"}


def _sources() -> list[Path]:
    packages = [p for p in ROOT.glob("plugins/*/diffsynth_*") if p.is_dir()]
    files = [f for package in packages for f in package.rglob("*.py")]
    files += [f for f in (ROOT / "examples").rglob("*.py")]
    return sorted(files) + sorted((ROOT / "diffsynth_core" / "scaffold").rglob("*.py.tmpl"))


def _core_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of diffsynth_core in ``path``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".tmpl":  # a scaffold template: fill its placeholders to parse it
        text = Template(text).safe_substitute(package="pkg", module="mod", family="fam")
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffsynth_core"):
            found.append((node.lineno, node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("diffsynth_core")]
    return found


def test_plugins_examples_and_the_scaffold_import_only_the_face() -> None:
    outside = []
    for path in _sources():
        for line, module, names in _core_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module not in ALLOWED_MODULES:
                outside.append(f"{where} imports from {module}")
            elif module == "diffsynth_core":
                outside += [f"{where}: {n} is not in the face" for n in names if n not in diffsynth_core.__all__]
    assert len(_sources()) > 40  # the scan sees the plugins
    assert not outside, "\n".join(outside)


def test_the_check_sees_an_import_from_a_submodule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from diffsynth_core.lora.inject import merge_lora\n")
    assert _core_imports(bad) == [(2, "diffsynth_core.lora.inject", ["merge_lora"])]


@pytest.mark.parametrize("name", diffsynth_core.__all__)
def test_every_name_of_the_face_resolves_and_is_documented(name: str) -> None:
    assert getattr(diffsynth_core, name) is not None
    assert f"`{name}`" in (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), name


def test_the_face_imports_no_torch_until_a_heavy_name_is_used() -> None:
    code = (
        "import sys, diffsynth_core as d\n"
        "assert 'torch' not in sys.modules, 'torch at import'\n"
        "d.ModelFamily, d.hookimpl, d.ConfigError\n"
        "assert 'torch' not in sys.modules, 'torch for a registration name'\n"
        "d.PipelineUnit\n"
        "assert 'torch' in sys.modules\n"
        "print(d.API_VERSION)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == diffsynth_core.API_VERSION


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        diffsynth_core.nosuch  # noqa: B018
