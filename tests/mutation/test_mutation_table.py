"""The mutant table is well formed and current: every snippet occurs exactly once today.

``tox -e mutation`` runs the mutants (minutes); this check runs with the normal tests (well
under a second), so a refactor that moves a mutated line fails CI at once, naming the mutant
to update, instead of silently mutating nothing.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"diffsynth_mutation_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


run = _load("run")
MUTANTS = run.MUTANTS


def test_ids_are_unique_and_every_entry_is_filled() -> None:
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for m in MUTANTS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", m.id), m.id
        assert m.bug.strip() and "\n" not in m.bug, m.id
        assert m.original != m.mutated, m.id
        assert m.tests, m.id


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_snippet_occurs_exactly_once_and_the_mutant_compiles(mutant: object) -> None:
    path = ROOT / mutant.file  # type: ignore[attr-defined]
    assert path.is_file(), f"mutant {mutant.id}: no file {mutant.file}"  # type: ignore[attr-defined]
    mutated = run.apply(mutant, path.read_text(encoding="utf-8"))  # StaleMutant names it
    compile(mutated, str(path), "exec")


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_selection_names_existing_tests(mutant: object) -> None:
    args = mutant.tests  # type: ignore[attr-defined]
    files = [ROOT / a.split("::")[0] for a in run._paths(args)]
    assert files and all(f.is_file() and f.name.startswith("test_") for f in files), args
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    for arg in [a.split("::", 1)[1] for a in run._paths(args) if "::" in a]:
        assert f"def {arg.split('[')[0]}(" in text, f"mutant {mutant.id}: no test {arg}"  # type: ignore[attr-defined]
    for option, value in zip(args, args[1:], strict=False):
        if option == "-k":
            words = set(re.findall(r"[A-Za-z_]\w*", value)) - {"and", "or", "not"}
            assert any(w in text for w in words), f"mutant {mutant.id}: -k {value!r} matches nothing"  # type: ignore[attr-defined]


def test_a_moved_or_repeated_snippet_is_a_loud_stale_error() -> None:
    mutant = MUTANTS[0]
    with pytest.raises(run.StaleMutant, match=f"mutant {mutant.id}: snippet not found.*update the table"):
        run.apply(mutant, "nothing here")
    with pytest.raises(run.StaleMutant, match=r"ambiguous \(2 occurrences\)"):
        run.apply(mutant, mutant.original * 2)
    assert run.apply(mutant, f"a\n{mutant.original}\nb") == f"a\n{mutant.mutated}\nb"
