"""``diffsynth new-plugin``'s templates and their rendering.

``template/`` holds the files of a new plugin distribution, each ending in ``.tmpl``; a path
part ``__package__`` becomes the package name and ``__module__`` the name with underscores.
The contents are :class:`string.Template` text (``$package``, ``$family`` ...; ``$$`` is a
literal dollar), substituted strictly, so a misspelt placeholder is an error here and not a
broken plugin. Torch-free: the command runs without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from importlib.abc import Traversable

TEMPLATE = "template"
# lowercase letters, digits, single - or _ between them: a valid distribution, entry-point and
# (after - -> _) package name, and a family name users can type
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
RESERVED = {"core", "diffsynth"}


@dataclass(frozen=True)
class PluginNames:
    """Every name a new plugin derives from ``NAME``."""

    name: str  # as given: the folder name
    family: str  # --model NAME
    entry_point: str  # the plugin's name in `diffsynth plugins`
    distribution: str  # on PyPI
    package: str  # the import name
    module: str  # test-file infix

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        bare = name.removeprefix("diffsynth-").removeprefix("diffsynth_")
        if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(bare) or bare in RESERVED:
            raise ConfigError(
                f"{name!r} is not a valid plugin name: use lowercase letters, digits and single "
                "'-' or '_' between them, starting with a letter (e.g. my-model), not 'core'"
            )
        underscored = bare.replace("-", "_")
        return cls(
            name=name,
            family=bare.replace("_", "-"),
            entry_point=underscored,
            distribution=f"diffsynth-{bare.replace('_', '-')}",
            package=f"diffsynth_{underscored}",
            module=underscored,
        )


def core_requirement(version: str) -> str:
    """``diffsynth-core>=X.Y,<X.(Y+1)`` for 0.x (each minor may break), ``<X+1`` after 1.0."""
    major, minor = (int(p) for p in re.findall(r"\d+", version)[:2])
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"diffsynth-core>={major}.{minor},<{upper}"


def template_files() -> list[tuple[str, str]]:
    """``(relative path with placeholders, template text)`` of every template file."""
    root = resources.files(__name__).joinpath(TEMPLATE)
    found: list[tuple[str, str]] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            path = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, path + "/")
            elif child.name.endswith(".tmpl"):
                found.append((path.removesuffix(".tmpl"), child.read_text(encoding="utf-8")))

    walk(root, "")
    return found


def render(names: PluginNames, core_version: str) -> dict[str, str]:
    """The new plugin's files: relative path -> text."""
    from string import Template

    values = {
        "name": names.name,
        "family": names.family,
        "entry_point": names.entry_point,
        "distribution": names.distribution,
        "package": names.package,
        "module": names.module,
        "core_requirement": core_requirement(core_version),
    }
    out = {}
    for path, text in template_files():
        path = path.replace("__package__", names.package).replace("__module__", names.module)
        out[path] = Template(text).substitute(values)
    return out


def scaffold(names: PluginNames, folder: Path, core_version: str) -> list[Path]:
    """Write the plugin into ``folder`` (missing or empty); returns the files written."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not empty: choose another --output")
    files = render(names, core_version)  # before writing anything: a bad template writes nothing
    written = []
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
