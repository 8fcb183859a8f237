"""The layout (docs/design-changes.md, "Layout"): every first-party plugin (and the scaffold)
has the same six core modules; no import circles in library code; the engine
(``diffsynth_core/training/``) imports nothing of the CLI (``diffsynth_core/cli/``).

The import graph is read with :mod:`ast` from every ``.py`` of ``diffsynth_core`` and of each
plugin package, function-level imports included (a circle through a function-level import is
still a circle: it only moves the failure to call time), ``if TYPE_CHECKING:`` blocks left
out. A lazy re-export (``__getattr__`` and a string in ``_LAZY``) is no edge, and neither is an
import of a module's own ancestor package: Python has imported that before the module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIX = ("family.py", "plugin.py", "loading.py", "pipeline.py", "units.py", "tiny.py")


def plugin_packages(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in root.glob("plugins/*/diffsynth_*") if (p / "__init__.py").is_file())


def library_packages(root: Path = ROOT) -> list[Path]:
    return [root / "diffsynth_core", *plugin_packages(root)]


def module_name(path: Path, package: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _imports(child)


def import_graph(packages: list[Path]) -> dict[str, set[str]]:
    """``{module: {library modules it imports}}`` over all of ``packages``."""
    files = {module_name(f, p): f for p in packages for f in p.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
            for target in targets:
                if target in files and target != name and target not in ancestors:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", plugin_packages(), ids=lambda p: p.name)
def test_every_first_party_plugin_has_the_six_modules(package: Path) -> None:
    missing = [m for m in SIX if not (package / m).is_file()]
    assert not missing, f"{package.name} lacks {missing}"


def test_the_scaffold_produces_the_six_modules() -> None:
    template = ROOT / "diffsynth_core" / "scaffold" / "template" / "__package__"
    assert [m for m in SIX if not (template / f"{m}.tmpl").is_file()] == []


def test_no_import_circles_in_library_code() -> None:
    graph = import_graph(library_packages())
    assert len(graph) > 100  # the graph really holds the core and the plugins
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_function_level_circle(tmp_path: Path) -> None:
    """The form the qwen-image ``loader.py`` <-> ``pipeline.py`` circle had: both imports
    inside functions, one of them relative."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("_LAZY = {'Pipe': 'pkg.pipeline'}\n")
    (package / "loader.py").write_text("def load():\n    from .pipeline import Pipe\n")
    (package / "pipeline.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.plugin import X\n"
        "class Pipe:\n    def load(self):\n        from .loader import load\n"
    )
    (package / "plugin.py").write_text("import pkg.pipeline\n")
    assert cycles(import_graph([package])) == [["pkg.loader", "pkg.pipeline"]]


def test_the_engine_imports_nothing_of_the_cli() -> None:
    graph = import_graph(library_packages())
    engine = [m for m in graph if m.startswith("diffsynth_core.training")]
    assert len(engine) > 10
    wrong = {m: sorted(t for t in graph[m] if t.startswith("diffsynth_core.cli")) for m in engine}
    assert {m: t for m, t in wrong.items() if t} == {}
