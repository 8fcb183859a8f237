"""The docs and the repository files stay true: doc examples run, commands agree."""

from __future__ import annotations

import configparser
import io
import re
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from diffsynth_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.M | re.S)


@pytest.mark.parametrize("index", range(len(code_blocks(GUIDE, "python"))))
def test_plugin_guide_examples_run(index, monkeypatch):
    """Each example is a whole program; run it as a module of its own, as `python file.py` would."""
    module = types.ModuleType(f"docs_plugins_example_{index}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    source = code_blocks(GUIDE, "python")[index]
    with redirect_stdout(io.StringIO()) as out:
        exec(compile(source, f"{GUIDE}:block{index}", "exec"), module.__dict__)
    assert out.getvalue(), "an example should show what it does"


def test_plugin_guide_documents_every_hook():
    specs = [name for name in dir(hookspecs) if name.startswith("diffsynth_")]
    assert len(specs) == 11
    text = GUIDE.read_text()
    for name in specs:
        assert f"### `{name}(" in text, f"docs/plugins.md has no section for {name}"


def test_readme_demo_is_the_tox_demo():
    readme_train = re.search(r"diffsynth train [^\n`]*", (ROOT / "README.md").read_text()).group()
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert tox["testenv:demo"]["commands"].strip() == readme_train.strip()
    assert "torch==2.13.0" in tox["testenv"]["deps"]


def test_package_metadata():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [d for d in project["dependencies"] if d.startswith("torch")]
    assert torch and "==" not in torch[0], "metadata takes a torch range; environments pin it"
    assert {"test", "tensorboard", "plot", "modelscope", "video"} <= set(
        project["optional-dependencies"]
    )
    assert project["scripts"]["diffsynth"] == "diffsynth_core.cli.main:main"


def test_ci_script_is_strict():
    run = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in run and "tox" in run
