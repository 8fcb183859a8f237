"""The installed ``diffsynth`` script, run as a user runs it (one subprocess per test).

These need the example third-party plugin installed for real, as tox does:
``pip install --no-deps examples/third_party_plugin``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_fakes import write_dist

BIN = Path(sys.executable).parent
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "pandas")


def diffsynth(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSYNTH_")}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    script = BIN / "diffsynth"
    assert script.exists(), f"{script} is missing: pip install -e . into this environment"
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution whose plugin module raises ImportError, for PYTHONPATH."""
    site = tmp_path_factory.mktemp("broken-site")
    write_dist(site, "diffsynth-toy-broken", {"toy-broken": "import module_that_is_not_there\n"})
    return site


def test_help_imports_no_heavy_library():
    """Importing the CLI, building it with every installed plugin and --help stay light."""
    code = (
        "import sys\n"
        "import diffsynth_core.cli.main as m\n"
        "for args in (['--help'], ['plugins', '--json'], ['models', '--json']):\n"
        "    try:\n"
        "        m.main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        f"print('HEAVY', [n for n in {HEAVY!r} if n in sys.modules])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSYNTH_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "HEAVY []"


def test_plugins_shows_the_broken_plugin_and_the_example_plugin(broken_site):
    result = diffsynth("plugins", "--json", pythonpath=broken_site)
    assert result.returncode == 0, result.stderr
    plugins = {row["name"]: row for row in json.loads(result.stdout)}
    echo, broken = plugins["toy-echo"], plugins["toy-broken"]
    assert (echo["status"], echo["distribution"], echo["version"]) == (
        "ok",
        "diffsynth-toy-echo",
        "0.1.0",
    )
    assert echo["hooks"] == [
        "diffsynth_checkpoint_name",
        "diffsynth_register_commands",
        "diffsynth_register_models",
    ]
    assert broken["status"] == "broken" and broken["distribution"] == "diffsynth-toy-broken"
    assert "ModuleNotFoundError: No module named 'module_that_is_not_there'" in broken["error"]


def test_models_lists_the_others_despite_a_broken_plugin(broken_site):
    result = diffsynth("models", pythonpath=broken_site)
    assert result.returncode == 0
    rows = [line.split()[:4] for line in result.stdout.splitlines()]
    assert ["toy-echo", "toy-echo", "diffsynth-toy-echo", "0.1.0"] in rows
    assert "warning: plugin 'toy-broken' is broken: ModuleNotFoundError" in result.stderr


def test_a_plugin_commands_error_is_one_line():
    result = diffsynth("toy-echo", " ")
    assert (result.returncode, result.stderr) == (1, "error: toy-echo needs some text to echo\n")
