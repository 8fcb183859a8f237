"""``diffsynth new-plugin``: the names it takes and refuses, the files it writes, the wheel
that carries its templates, and (slow) a scaffolded plugin installed and tested as an author
would: its own tests pass at once."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from kit_helpers import ROOT, run_pytest

from diffsynth_core import __version__
from diffsynth_core.cli.main import build_cli
from diffsynth_core.scaffold import PluginNames, core_requirement, render

LAYOUT = {
    "pyproject.toml", "README.md", "tests/test_my_model_plugin.py", "tests/test_my_model_train.py",
    *(f"diffsynth_my_model/{m}.py" for m in (
        "__init__", "_core", "family", "plugin", "loading", "pipeline", "units", "tiny",
    )),
}  # fmt: skip


def new_plugin(*args: object) -> object:
    return CliRunner().invoke(build_cli(), ["new-plugin", *map(str, args)])


def test_names_derived_from_the_name() -> None:
    names = PluginNames.from_name("my-model")
    assert (names.family, names.entry_point, names.distribution, names.package) == (
        "my-model", "my_model", "diffsynth-my-model", "diffsynth_my_model",
    )  # fmt: skip
    assert PluginNames.from_name("diffsynth-my_model").distribution == "diffsynth-my-model"
    assert core_requirement("0.1.0") == "diffsynth-core>=0.1,<0.2"
    assert core_requirement("1.4.2") == "diffsynth-core>=1.4,<2"


@pytest.mark.parametrize("name", ["My-Model", "2fast", "a--b", "my model", "core", "x-", "é"])
def test_invalid_name_is_one_error_line(name: str, tmp_path: Path) -> None:
    result = new_plugin(name, "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "is not a valid plugin name" in result.output
    assert not (tmp_path / "out").exists()


def test_existing_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = new_plugin("my-model", "--output", tmp_path)
    assert result.exit_code == 1 and "already exists and is not empty" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_writes_the_layout_into_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()  # empty is fine
    result = new_plugin("my-model", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")}
    assert {p for p in written if "." in Path(p).name} == LAYOUT
    pyproject = (tmp_path / "out" / "pyproject.toml").read_text()
    assert 'my_model = "diffsynth_my_model.plugin"' in pyproject
    assert f'"{core_requirement(__version__)}"' in pyproject


def test_rendered_python_parses_and_only_core_module_imports_the_core() -> None:
    """No placeholder left, valid Python, and every diffsynth_core import in ``_core.py``
    (what the lead adapts when the core's API moves)."""
    files = render(PluginNames.from_name("my-model"), __version__)
    for path, text in files.items():
        assert "$" not in text, f"{path}: a placeholder was not substituted"
        if not path.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "diffsynth_core"
            ):
                assert path == "diffsynth_my_model/_core.py", f"{path} imports {node.module}"


def _copy_core_source(folder: Path) -> Path:
    """The core's distribution files, so building a wheel leaves no build/ in the checkout."""
    folder.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(
        ROOT / "diffsynth_core", folder / "diffsynth_core",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    return folder


def _offline_builds() -> None:
    """Skip unless this environment builds wheels without the network (--no-build-isolation:
    its own setuptools, new enough for the SPDX ``license`` string that both projects use)."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed: offline wheel builds need it")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot build these projects")


def _core_wheel(tmp_path: Path) -> Path:
    """A wheel of this checkout's diffsynth-core, built offline from a copy of its files."""
    _offline_builds()
    source = _copy_core_source(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("diffsynth_core-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_carries_the_templates_and_the_kit_entry_point(tmp_path: Path) -> None:
    wheel = _core_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {n for n in names if "/scaffold/template/" in n}
    expected = {
        f"diffsynth_core/scaffold/template/{p.relative_to(ROOT / 'diffsynth_core/scaffold/template')}"
        for p in (ROOT / "diffsynth_core/scaffold/template").rglob("*.tmpl")
    }
    assert templates == expected and len(expected) == len(LAYOUT)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]\ndiffsynth = diffsynth_core.testing.pytest_plugin" in text


@pytest.mark.slow
def test_scaffolded_plugin_installs_and_its_tests_pass(tmp_path: Path) -> None:
    """As on a fresh machine: this core's wheel and the scaffolded plugin pip-installed (into a
    folder of their own, first on the path: the shared venv stays as it was), then the
    plugin's test suite in a fresh pytest process, which finds the author kit through the
    wheel's pytest11 entry point alone (no -p). Every test passes, none is skipped."""
    start = time.monotonic()
    result = new_plugin("kit-demo", "--output", tmp_path / "kit-demo")
    assert result.exit_code == 0, result.output
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(_core_wheel(tmp_path)), str(tmp_path / "kit-demo")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert (site / "diffsynth_kit_demo" / "plugin.py").is_file()
    done = run_pytest(tmp_path / "kit-demo", "-rA", pythonpath=site, kit=False)
    took = time.monotonic() - start
    print(f"scaffold + install + its tests: {took:.1f} s")
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "5 passed" in done.stdout and "skipped" not in done.stdout, report


def test_plugin_guide_layout_is_what_the_scaffold_writes() -> None:
    """docs/plugin-guide.md's layout block names exactly the files the scaffold writes."""
    guide = (ROOT / "docs" / "plugin-guide.md").read_text()
    block = guide.split("## 2. The layout", 1)[1].split("```")[1]
    listed = {line.split()[0] for line in block.splitlines() if line.strip()}
    files = render(PluginNames.from_name("my-model"), __version__)
    expected = {"my-model/"} | {p.split("/")[0] + "/" for p in files if "/" in p}
    expected |= {p.rsplit("/", 1)[-1] for p in files}
    assert listed == expected
