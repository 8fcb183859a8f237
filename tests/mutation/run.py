"""Run the curated mutants of ``mutants.py``: each must make its tests fail.

    python tests/mutation/run.py                 # every mutant (what ``tox -e mutation`` runs)
    python tests/mutation/run.py --list          # the table, nothing run
    python tests/mutation/run.py ID [ID ...]     # only these mutants
    python tests/mutation/run.py --jobs 4        # parallel workers (default: CPUs, at most 4)

The real checkout is never modified: the repository's source files are copied once per worker
into a temporary folder, which goes first on ``PYTHONPATH`` (the core and every plugin under
``plugins/``), and each mutant is applied there, tested with ``pytest -x`` and reverted. First
the union of the mutants' test selections runs unmutated (a failing baseline would make every
kill meaningless). Prints one line per mutant, then the kill rate and the run time. Exit
status 1 when a mutant survives, is stale (its snippet no longer occurs exactly once: update
the table) or its test selection collects nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# what a copy leaves out: VCS data, environments, caches and run outputs
SKIP = {".git", ".venv", "venv", ".tox", "__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_AT_ROOT = {"runs", "out", "build", "dist"}
TIMEOUT_S = 300


class StaleMutant(Exception):
    """The mutant's snippet does not occur exactly once in its file."""


def apply(mutant: Mutant, text: str) -> str:
    """``text`` with the mutant's snippet replaced; StaleMutant unless it occurs exactly once."""
    count = text.count(mutant.original)
    if count != 1:
        found = "not found" if count == 0 else f"ambiguous ({count} occurrences)"
        raise StaleMutant(f"mutant {mutant.id}: snippet {found} in {mutant.file}, update the table")
    return text.replace(mutant.original, mutant.mutated)


def copy_repository(target: Path) -> None:
    shutil.copytree(
        ROOT,
        target,
        ignore=lambda folder, names: [
            n for n in names
            if n in SKIP or n.endswith(".egg-info") or (n in SKIP_AT_ROOT and Path(folder) == ROOT)
        ],  # fmt: skip
        symlinks=True,
    )


def environment(copy: Path, threads: int) -> dict[str, str]:
    """The pytest environment: the copy's packages first; no bytecode, so no stale .pyc."""
    paths = [str(copy), *(str(p) for p in sorted((copy / "plugins").glob("*")) if p.is_dir())]
    inherited = [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if p and not Path(p).resolve().is_relative_to(ROOT)
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + inherited))
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def check_imports(copy: Path, env: dict[str, str]) -> None:
    """Fail loudly if an installed package would shadow the copy (then nothing is mutated)."""
    names = ["diffsynth_core", *(p.name for p in sorted((copy / "plugins").glob("*/diffsynth_*")))]
    code = "import sys\n" + "".join(
        f"import {n}; print({n}.__file__)\n" for n in names if n.isidentifier()
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=copy, capture_output=True, text=True
    )
    files = out.stdout.split()
    if out.returncode or len(files) != len(names) or not all(
        Path(f).resolve().is_relative_to(copy.resolve()) for f in files
    ):
        raise SystemExit(
            f"error: the scratch copy is not what python imports ({files or out.stderr.strip()})"
        )


def pytest(copy: Path, env: dict[str, str], args: tuple[str, ...], timeout: float) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    try:
        done = subprocess.run(
            command, env=env, cwd=copy, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # killed | SURVIVED | STALE | NO TESTS | ERROR
    seconds: float
    detail: str = ""


def run_mutant(mutant: Mutant, copy: Path, env: dict[str, str], timeout: float) -> Outcome:
    start = time.monotonic()
    path = copy / mutant.file
    original = path.read_text(encoding="utf-8")
    try:
        mutated = apply(mutant, original)
    except StaleMutant as error:
        return Outcome(mutant, "STALE", 0.0, str(error))
    path.write_text(mutated, encoding="utf-8")
    try:
        rc, output = pytest(copy, env, mutant.tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.monotonic() - start
    last = output.splitlines()[-1] if output else ""
    if rc == 0:
        return Outcome(mutant, "SURVIVED", seconds, last)
    if rc in (1, 2, -1):  # failed, collection error (the mutant broke an import), timeout
        return Outcome(mutant, "killed", seconds, last)
    if rc == 5:
        return Outcome(mutant, "NO TESTS", seconds, f"the selection {mutant.tests} collects nothing")
    return Outcome(mutant, "ERROR", seconds, f"pytest exit status {rc}: {last}")


def baseline(mutants: list[Mutant], copies: list[Path], envs: list[dict[str, str]], timeout: float) -> None:
    """Every selected test file passes unmutated (files only: ``-k`` narrows per mutant)."""
    files = sorted({a.split("::")[0] for m in mutants for a in _paths(m.tests)})
    chunks = [tuple(files[i :: len(copies)]) for i in range(len(copies))]
    with ThreadPoolExecutor(len(copies)) as pool:
        results = list(pool.map(lambda i: pytest(copies[i], envs[i], chunks[i], timeout * 2), range(len(copies))))
    for rc, output in results:
        if rc != 0:
            print(output[-4000:])
            raise SystemExit(f"error: the unmutated tests fail (exit status {rc}); fix them first")


def _paths(args: tuple[str, ...]) -> list[str]:
    """The file / node-id arguments of a selection (not options nor their values)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in ("-k", "-m")
        else:
            out.append(arg)
    return out


def report(outcomes: list[Outcome], seconds: float) -> int:
    width = max(len(o.mutant.id) for o in outcomes)
    for o in outcomes:
        note = ""
        if o.mutant.expected_survivor:
            note = (
                f"  (expected: {o.mutant.expected_survivor})"
                if o.verdict == "SURVIVED"
                else "  (marked expected_survivor: drop the mark)"
            )
        print(f"{o.mutant.id:<{width}}  {o.verdict:<8}  {o.seconds:5.1f} s  {o.mutant.bug}{note}")
        if o.verdict not in ("killed", "SURVIVED"):
            print(f"{'':<{width}}  {o.detail}")
    killed = sum(o.verdict == "killed" for o in outcomes)
    survivors = [o.mutant.id for o in outcomes if o.verdict == "SURVIVED"]
    broken = [o.mutant.id for o in outcomes if o.verdict not in ("killed", "SURVIVED")]
    print(
        f"\nkill rate: {killed}/{len(outcomes)} ({100 * killed / len(outcomes):.0f}%) "
        f"in {seconds:.0f} s"
    )
    if survivors:
        print(f"survivors (each is a missing test): {', '.join(survivors)}")
    if broken:
        print(f"stale or broken entries (update tests/mutation/mutants.py): {', '.join(broken)}")
    return 1 if survivors or broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ids", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument(
        "--select",
        help="pytest arguments that replace every mutant's own selection (e.g. 'tests/training'):"
        " does a wider run kill a survivor?",
    )
    args = parser.parse_args(argv)

    unknown = set(args.ids) - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"no mutant named {', '.join(sorted(unknown))}")
    mutants = [m for m in MUTANTS if not args.ids or m.id in args.ids]
    if args.select:
        mutants = [replace(m, tests=tuple(shlex.split(args.select))) for m in mutants]
    if args.list:
        for m in mutants:
            print(f"{m.id}: {m.file}: {m.bug}\n    pytest {' '.join(m.tests)}")
        return 0

    start = time.monotonic()
    jobs = max(1, min(args.jobs, len(mutants)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with tempfile.TemporaryDirectory(prefix="diffsynth-mutation-") as scratch:
        copies = [Path(scratch) / f"worker-{i}" for i in range(jobs)]
        for copy in copies:
            copy_repository(copy)
        envs = [environment(copy, threads) for copy in copies]
        check_imports(copies[0], envs[0])
        if not args.no_baseline:
            baseline(mutants, copies, envs, args.timeout)
            print(f"baseline: the selected tests pass unmutated ({time.monotonic() - start:.0f} s)")
        free = list(range(jobs))  # one mutant at a time per copy

        def work(mutant: Mutant) -> Outcome:
            worker = free.pop()
            try:
                outcome = run_mutant(mutant, copies[worker], envs[worker], args.timeout)
            finally:
                free.append(worker)
            print(f"  {outcome.verdict:<8} {mutant.id} ({outcome.seconds:.1f} s)", flush=True)
            return outcome

        with ThreadPoolExecutor(jobs) as pool:
            outcomes = list(pool.map(work, mutants))
    print()
    return report(outcomes, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
