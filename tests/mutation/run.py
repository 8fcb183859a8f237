"""Run the curated mutants of ``mutants.py``: each must make its tests fail.

    python tests/mutation/run.py                 # every mutant (what ``tox -e mutation`` runs)
    python tests/mutation/run.py --list          # the table, nothing run
    python tests/mutation/run.py ID [ID ...]     # only these mutants
    python tests/mutation/run.py --jobs 4        # parallel workers (default: CPUs, at most 4)
    python tests/mutation/run.py ID --select tests/training   # does a wider run kill it?

The real checkout is never modified: the repository is copied once per worker into a
temporary folder, whose core and plugins come first on the import path, and each mutant is
applied there, tested with ``pytest -x`` and reverted. First every test file the mutants name
runs unmutated (a failing baseline would make every kill meaningless). Prints one line per
mutant, then the kill rate and the run time. Exit status 1 when a mutant survives, is stale
(its snippet no longer occurs exactly once: update the table) or its selection runs no test.

Speed: torch, diffusers, transformers and peft are imported once, here, and every pytest run
is a fork of this process (where ``os.fork`` exists; ``--no-fork`` starts a fresh python each
time, as on Windows). Nothing of diffsynth is imported before the fork, so each run imports the
mutated code afresh; the children's own subprocesses (CLI tests) get the copy's PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# what a copy leaves out: VCS data, environments, caches; at the top also run outputs
SKIP = {".git", ".venv", "venv", ".tox", "__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_AT_ROOT = {"runs", "out", "build", "dist"}
TIMEOUT_S = 300
# imported once before forking (never anything that imports diffsynth)
WARM = (
    "torch", "numpy", "PIL.Image", "safetensors.torch", "accelerate", "peft", "pytest",
    "diffusers:QwenImageTransformer2DModel,AutoencoderKLQwenImage,QwenImagePipeline,"
    "WanVACETransformer3DModel,AutoencoderKLWan,FlowMatchEulerDiscreteScheduler",
    "transformers:Qwen2_5_VLForConditionalGeneration,UMT5EncoderModel",
)  # fmt: skip


class StaleMutant(Exception):
    """The mutant's snippet does not occur exactly once in its file."""


def apply(mutant: Mutant, text: str) -> str:
    """``text`` with the mutant's snippet replaced; StaleMutant unless it occurs exactly once."""
    count = text.count(mutant.original)
    if count != 1:
        found = "not found" if count == 0 else f"ambiguous ({count} occurrences)"
        raise StaleMutant(f"mutant {mutant.id}: snippet {found} in {mutant.file}, update the table")
    return text.replace(mutant.original, mutant.mutated)


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


# -- the scratch copies ------------------------------------------------------------------------


def copy_repository(target: Path) -> None:
    def ignored(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == ROOT
        return [
            n for n in names
            if n in SKIP or n.endswith(".egg-info") or (top and n in SKIP_AT_ROOT)
        ]  # fmt: skip

    shutil.copytree(ROOT, target, ignore=ignored, symlinks=True)


def import_paths(copy: Path) -> list[str]:
    return [str(copy), *(str(p) for p in sorted((copy / "plugins").glob("*")) if p.is_dir())]


def _outside_checkout(path: str) -> bool:
    """False for an import path into the real checkout's code (environments inside it are fine)."""
    if not path:
        return False
    resolved = Path(path).resolve()
    return not (
        resolved == ROOT
        or resolved.parent == ROOT / "plugins"
        or resolved.is_relative_to(ROOT / "tests")
        or resolved.is_relative_to(ROOT / "diffsynth_core")
    )


def environment(copy: Path, threads: int) -> dict[str, str]:
    """The tests' environment: the copy first on PYTHONPATH; no bytecode, so no stale .pyc."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if _outside_checkout(p)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(import_paths(copy) + inherited))
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
    code = "".join(f"import {n}; print({n}.__file__)\n" for n in names if n.isidentifier())
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=copy, capture_output=True, text=True
    )
    files = out.stdout.split()
    inside = all(Path(f).resolve().is_relative_to(copy.resolve()) for f in files)
    if out.returncode or len(files) != len(names) or not inside:
        raise SystemExit(
            f"error: the scratch copy is not what python imports ({files or out.stderr.strip()})"
        )


# -- one pytest run: a fork of this process, or a fresh python -------------------------------


def warm_up() -> None:
    """Import the heavy libraries the tests use, so that every forked run starts warm."""
    import importlib

    for entry in WARM:
        module, _, names = entry.partition(":")
        try:
            imported = importlib.import_module(module)
            for name in filter(None, names.split(",")):
                getattr(imported, name)
        except Exception:  # noqa: BLE001 - an optional speed-up: the run imports what it needs
            pass


class Run:
    """A running ``pytest -x -q`` over ``args`` in ``copy``; output goes to ``log``."""

    def __init__(self, copy: Path, env: dict[str, str], args: tuple[str, ...], log: Path, fork: bool):
        self.log, self.start = log, time.monotonic()
        argv = ["-x", "-q", "-p", "no:cacheprovider", *args]
        if fork:  # plugins such as anyio's were imported by warm_up: too late to rewrite asserts
            argv[:0] = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
        if not fork:
            with log.open("wb") as out:
                self.popen: subprocess.Popen[bytes] | None = subprocess.Popen(
                    [sys.executable, "-m", "pytest", *argv], env=env, cwd=copy, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            return
        self.popen = None
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            _child(copy, env, argv, log)

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        pid = self.popen.pid if self.popen is not None else self.pid
        try:
            os.killpg(pid, signal.SIGKILL)  # the tests' own subprocesses too
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
        if self.popen is not None:
            self.popen.wait()
        else:
            os.waitpid(self.pid, 0)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace").strip()


def _child(copy: Path, env: dict[str, str], argv: list[str], log: Path) -> None:
    code = 3
    try:
        os.setpgid(0, 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(copy)
        os.environ.clear()
        os.environ.update(env)
        sys.dont_write_bytecode = True
        sys.path[:] = import_paths(copy) + [p for p in sys.path if _outside_checkout(p)]
        import pytest

        code = int(pytest.main(argv))
    except BaseException as error:  # noqa: BLE001 - report anything, then leave
        print(f"mutation harness: {type(error).__name__}: {error}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- the runs ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # killed | SURVIVED | STALE | NO TESTS | ERROR
    seconds: float
    detail: str = ""


def judge(mutant: Mutant, rc: int | None, output: str, seconds: float) -> Outcome:
    last = output.splitlines()[-1] if output else ""
    if rc is None:
        return Outcome(mutant, "killed", seconds, "timed out (counted as killed)")
    if rc == 0:
        return Outcome(mutant, "SURVIVED", seconds, last)
    if rc in (1, 2):  # a test failed, or collection failed (the mutant broke an import)
        return Outcome(mutant, "killed", seconds, last)
    if rc == 5:
        return Outcome(mutant, "NO TESTS", seconds, f"the selection {mutant.tests} runs no test")
    return Outcome(mutant, "ERROR", seconds, f"pytest exit status {rc}: {output[-2000:]}")


class Workers:
    """One scratch copy per worker; at most one run per copy at a time."""

    def __init__(self, scratch: Path, jobs: int, timeout: float, fork: bool) -> None:
        self.copies = [scratch / f"worker-{i}" for i in range(jobs)]
        threads = max(1, (os.cpu_count() or 1) // jobs)
        for copy in self.copies:
            copy_repository(copy)
        self.envs = [environment(copy, threads) for copy in self.copies]
        self.logs = scratch / "logs"
        self.logs.mkdir()
        self.timeout, self.fork = timeout, fork

    def map(self, jobs: list[tuple[str, tuple[str, ...], Any]], on_done: Any) -> None:
        """Run every (name, pytest args, prepare) job; ``prepare(copy)`` returns an undo."""
        pending, running = list(jobs), {}
        free = list(range(len(self.copies)))
        while pending or running:
            while pending and free:
                worker = free.pop()
                name, args, prepare = pending.pop(0)
                undo = prepare(self.copies[worker])
                if undo is None:  # nothing to run (a stale mutant)
                    free.append(worker)
                    continue
                log = self.logs / f"{name}.log"
                run = Run(self.copies[worker], self.envs[worker], args, log, self.fork)
                running[worker] = (name, run, undo)
            time.sleep(0.05)
            for worker, (name, run, undo) in list(running.items()):
                rc = run.poll()
                elapsed = time.monotonic() - run.start
                if rc is None and elapsed < self.timeout:
                    continue
                if rc is None:
                    run.kill()
                undo()
                del running[worker]
                free.append(worker)
                on_done(name, rc, run.output(), elapsed)


def baseline_selections(mutants: list[Mutant]) -> list[tuple[str, ...]]:
    """Per test file, the union of what the mutants select in it (``-k`` joined with ``or``)."""
    chosen: dict[str, list[str] | None] = {}
    for m in mutants:
        k = next((v for o, v in zip(m.tests, m.tests[1:], strict=False) if o == "-k"), None)
        for arg in _paths(m.tests):
            file, _, test = arg.partition("::")
            expr = k or (test.split("[")[0] if test else None)
            if expr is None:
                chosen[file] = None  # the whole file
            elif chosen.get(file, []) is not None:
                chosen.setdefault(file, []).append(f"({expr})")
    return [
        (file,) if exprs is None else (file, "-k", " or ".join(dict.fromkeys(exprs)))
        for file, exprs in sorted(chosen.items())
    ]


def baseline(workers: Workers, mutants: list[Mutant], factor: float) -> None:
    """What the mutants select passes unmutated (else a kill would mean nothing)."""
    failed: list[str] = []

    def done(name: str, rc: int | None, output: str, seconds: float) -> None:
        if rc != 0:
            failed.append(f"{output[-3000:]}\n({name}: exit status {rc})")

    saved = workers.timeout
    workers.timeout = saved * factor
    jobs = [(f"baseline-{i}", args, lambda _copy: lambda: None)
            for i, args in enumerate(baseline_selections(mutants))]  # fmt: skip
    workers.map(jobs, done)
    workers.timeout = saved
    if failed:
        print("\n".join(failed))
        raise SystemExit("error: the unmutated tests fail; fix them before judging mutants")


def run_mutants(workers: Workers, mutants: list[Mutant], verbose: bool = False) -> list[Outcome]:
    by_id = {m.id: m for m in mutants}
    outcomes: dict[str, Outcome] = {}

    def prepare(mutant: Mutant) -> Any:
        def apply_to(copy: Path) -> Any:
            path = copy / mutant.file
            original = path.read_text(encoding="utf-8")
            try:
                path.write_text(apply(mutant, original), encoding="utf-8")
            except StaleMutant as error:
                outcomes[mutant.id] = Outcome(mutant, "STALE", 0.0, str(error))
                print(f"  STALE    {mutant.id}", flush=True)
                return None
            return lambda: path.write_text(original, encoding="utf-8")

        return apply_to

    def done(name: str, rc: int | None, output: str, seconds: float) -> None:
        outcome = outcomes[name] = judge(by_id[name], rc, output, seconds)
        print(f"  {outcome.verdict:<8} {name} ({seconds:.1f} s)", flush=True)
        if verbose:
            print("    " + "\n    ".join(output.splitlines()[-15:]), flush=True)

    workers.map([(m.id, m.tests, prepare(m)) for m in mutants], done)
    return [outcomes[m.id] for m in mutants]


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
        if o.verdict not in ("killed", "SURVIVED") or "timed out" in o.detail:
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
    parser.add_argument("--no-fork", action="store_true", help="a fresh python per run")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each run's output")
    parser.add_argument(
        "--select",
        help="pytest arguments that replace every mutant's own selection (e.g. 'tests/training')",
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
    fork = hasattr(os, "fork") and not args.no_fork
    with tempfile.TemporaryDirectory(prefix="diffsynth-mutation-") as scratch:
        workers = Workers(Path(scratch), jobs, args.timeout, fork)
        check_imports(workers.copies[0], workers.envs[0])
        if fork:
            os.environ["OMP_NUM_THREADS"] = workers.envs[0]["OMP_NUM_THREADS"]
            warm_up()
        print(f"{len(mutants)} mutant(s), {jobs} worker(s), set up in {time.monotonic() - start:.0f} s")
        if not args.no_baseline:
            baseline(workers, mutants, factor=3)
            print(f"baseline: the selected tests pass unmutated ({time.monotonic() - start:.0f} s)")
        outcomes = run_mutants(workers, mutants, args.verbose)
    print()
    return report(outcomes, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
