"""The README's first command: its install gives everything it promises, and it reruns."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def readme_first_command() -> str:
    block = re.search(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert block, "README.md has no bash block"
    return block.group(1).strip()


def _extras() -> dict[str, list[str]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _install_dev():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("install_dev", ROOT / ".ci" / "install_dev.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_readme_install_and_the_demo_env_give_the_loss_plot() -> None:
    """`loss.png` needs matplotlib: the README's install and tox's demo env install it."""
    install = shlex.split(readme_first_command().split("&&")[1])
    core = install[install.index("-e") + 1]
    extras = re.fullmatch(r"\.\[([\w,]+)\]", core)
    assert extras, f"the README installs the core as {core!r}, without the plot extra"
    assert "plot" in extras.group(1).split(",")
    assert any(dep.startswith("matplotlib") for dep in _extras()["plot"])
    assert _install_dev().core_spec(["plugins/diffsynth-qwen-image"]) == core


@pytest.mark.slow
def test_the_readme_demo_runs_twice(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's train command, twice into one folder (shorter: 1 step, 1 sampling step)."""
    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager

    manager = build_plugin_manager()
    if "qwen-image" not in manager.families:
        pytest.skip("the qwen-image plugin is not installed")
    reset_plugin_manager(manager)
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path_factory.getbasetemp() / "diffsynth-cache"))
    train = shlex.split(readme_first_command().split("&&")[2])[1:]  # without .venv/bin/diffsynth
    train[train.index("--output") + 1] = str(tmp_path / "demo")
    train += ["--max-steps", "1", "--sample-steps", "1"]
    try:
        for attempt in (1, 2):
            result = CliRunner().invoke(build_cli(manager), train)
            assert result.exit_code == 0, f"run {attempt}: {result.output}"
            assert (tmp_path / "demo" / "final.safetensors").is_file()
            assert (tmp_path / "demo" / "loss.png").is_file()
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
    finally:
        reset_plugin_manager(None)
