"""The author kit (``diffsynth_core.testing.pytest_plugin``, pytest11 entry point ``diffsynth``):
each fixture does what its docstring says, seen from a pytest run of its own, as a plugin's
test suite uses it; and the plugin module is torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kit_helpers import KIT, ROOT, run_pytest

KIT_TESTS = """
import sys
from pathlib import Path

import pytest

from diffsynth_core.plugins import get_plugin_manager
from diffsynth_core.testing import ToyPlugin

TOY_CLI = [sys.executable, "TOY_CLI_PATH"]


def test_manager_holds_only_the_plugin(diffsynth_plugin_manager, monkeypatch):
    manager = diffsynth_plugin_manager(ToyPlugin())
    assert get_plugin_manager() is manager
    assert [f.name for f in manager.families] == ["toy"]
    assert {n for n, i in manager.plugins.items() if not i.builtin} == {"toy"}
    assert "sft" in manager.losses  # the built-ins are registered too
    import os
    assert os.environ["DIFFSYNTH_LOAD_PLUGINS"] == "toy"


def test_manager_is_reset_after_the_test():
    assert "toy" not in get_plugin_manager().families


def test_unknown_plugin_is_a_usage_error(diffsynth_plugin_manager):
    with pytest.raises(pytest.UsageError, match="no_such_plugin_module"):
        diffsynth_plugin_manager("no_such_plugin_module")


def test_broken_plugin_fails_the_test_with_its_error(diffsynth_plugin_manager):
    from diffsynth_core import hookimpl

    class Misspelt:
        __name__ = "misspelt"

        @hookimpl
        def diffsynth_register_model(self, register):  # "models": no such hook
            pass

    with pytest.raises(pytest.fail.Exception, match="misspelt.*match no diffsynth hook"):
        diffsynth_plugin_manager(Misspelt())


def test_image_dataset(diffsynth_image_dataset, tmp_path):
    from PIL import Image
    import csv
    assert diffsynth_image_dataset.parent == tmp_path
    rows = list(csv.DictReader((diffsynth_image_dataset / "metadata.csv").open()))
    assert len(rows) == 4 and set(rows[0]) == {"image", "prompt"}
    assert {Image.open(diffsynth_image_dataset / r["image"]).size for r in rows} == {(64, 64)}


def test_video_dataset(diffsynth_video_dataset):
    import csv
    from diffsynth_core.data.video import read_frames
    rows = list(csv.DictReader((diffsynth_video_dataset / "metadata.csv").open()))
    assert len(rows) == 2 and set(rows[0]) == {"video", "prompt"}
    frames = read_frames(diffsynth_video_dataset / rows[0]["video"], 9)
    assert len(frames) == 9 and frames[0].size == (32, 32)
    # the light square moves right: its left edge on the middle row, frame by frame
    lefts = [[p != frames[k].getpixel((0, 0)) for p in
              [frames[k].getpixel((x, 16)) for x in range(32)]].index(True) for k in range(9)]
    assert lefts == sorted(lefts) and lefts[0] == 0 and lefts[-1] > 16


def test_manager_from_a_module_path(diffsynth_plugin_manager):
    manager = diffsynth_plugin_manager("diffsynth_flux.plugin")
    assert sorted(f.name for f in manager.families) == ["flux-dev", "flux-schnell"]


def test_run_train(diffsynth_run_train, diffsynth_image_dataset):
    run = diffsynth_run_train(
        "toy", "--max-steps", "3", "--height", "32", "--width", "32",
        dataset=diffsynth_image_dataset, command=TOY_CLI,
    )
    assert run.exit_code == 0, run.output
    assert "final.safetensors" in run.files and "logs/metrics.csv" in run.files
    assert len(run.losses) == 3 and all(x > 0 for x in run.losses)


def test_run_train_failure(diffsynth_run_train, diffsynth_image_dataset):
    run = diffsynth_run_train(
        "toy", "--max-steps", "-1", dataset=diffsynth_image_dataset, command=TOY_CLI
    )
    assert run.exit_code != 0 and "max-steps" in run.output and run.files == []
"""


@pytest.mark.slow
def test_fixtures_in_a_pytest_run_of_their_own(tmp_path: Path) -> None:
    tests = tmp_path / "kit_tests"
    tests.mkdir()
    toy_cli = ROOT / "tests" / "training" / "toy_cli.py"
    (tests / "test_kit.py").write_text(KIT_TESTS.replace("TOY_CLI_PATH", str(toy_cli)))
    done = run_pytest(tests)
    assert done.returncode == 0 and "9 passed" in done.stdout, done.stdout[-4000:] + done.stderr


def test_kit_is_registered_as_pytest11_and_imports_no_torch() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"diffsynth": KIT}
    code = f"import sys, {KIT}; assert 'torch' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
