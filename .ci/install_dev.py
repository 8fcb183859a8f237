"""Install the development environment: the core, every plugin, the example plugin.

Run by tox (``commands_pre``) with the environment's own python. Installs, in one pip call so
that the local core satisfies every plugin's ``diffsynth-core`` requirement:

- ``torch==2.13.0`` (the CPU wheel on local disk; a range would pull a CUDA build),
- the core in develop mode with its test and video extras (its plot extra alone for the demo,
  as the README's first command installs it: ``loss.png`` needs matplotlib),
- every ``plugins/*`` that has a ``pyproject.toml``, in develop mode (new plugins are picked
  up without editing anything),

then the example third-party plugin as a real (non-editable) install, so that its entry point
is exactly what a user's ``pip install`` leaves. With plugin folders as arguments
(``install_dev.py plugins/diffsynth-qwen-image``) it installs only the core and those, as the
README's first command does (tox's ``demo`` environment). A stamp in the environment records a
hash of what was installed; when nothing changed the script returns at once, which keeps
``tox`` fast.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "third_party_plugin"
TORCH = "torch==2.13.0"
STAMP = Path(sys.prefix) / ".diffsynth-dev-install"


def plugin_dirs() -> list[Path]:
    """Every plugin distribution under plugins/, sorted."""
    return sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))


def fingerprint(plugins: list[Path], example: bool) -> str:
    """A hash of every file whose change needs a reinstall (metadata; the example's code)."""
    files = [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in plugins)]
    if example:
        files += [f for f in sorted(EXAMPLE.rglob("*")) if f.is_file() and _source(f)]
    digest = hashlib.sha256(f"{TORCH} {example} {core_spec([] if example else ['demo'])}".encode())
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _source(path: Path) -> bool:
    return not any(
        part in ("build", "__pycache__") or part.endswith(".egg-info") for part in path.parts
    )


def pip(*args: str) -> None:
    print("+ pip install", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True, cwd=ROOT)


def core_spec(selected: list[str]) -> str:
    """The core with its extras: everything for the tests, the README's extras for the demo."""
    return ".[plot]" if selected else ".[test,video]"


def main(selected: list[str]) -> None:
    plugins = [ROOT / p for p in selected] if selected else plugin_dirs()
    stamp = fingerprint(plugins, example=not selected)
    if STAMP.exists() and STAMP.read_text() == stamp:
        print("development install is up to date")
        return
    editable = [arg for p in plugins for arg in ("-e", str(p.relative_to(ROOT)))]
    pip(TORCH, "-e", core_spec(selected), *editable)
    if not selected:
        pip("--no-deps", "--force-reinstall", str(EXAMPLE.relative_to(ROOT)))
    STAMP.write_text(stamp)


if __name__ == "__main__":
    main(sys.argv[1:])
