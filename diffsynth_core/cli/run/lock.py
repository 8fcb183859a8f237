"""The output folder of ``diffsynth train``: usable, not someone else's, and cleared on demand.

:func:`check_writable` refuses an ``--output`` that is a file, lies under a file or cannot be
written, before anything loads. :class:`OutputLock` is taken by the main process for the
whole run: ``OUTPUT/.diffsynth-train.lock`` holds its PID under ``fcntl.flock``, which the
kernel releases when the process dies, so a run killed with SIGKILL never blocks the next
one. A second run on the same folder stops with one line naming the first one's PID (two runs
would otherwise write the same temporary state folder and prune each other's files).
:func:`check_previous_run` refuses to start afresh over a previous run, and
:func:`remove_previous_run` clears one under ``--overwrite``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from ...errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the run goes unlocked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".diffsynth-train.lock"


def check_writable(folder: Path) -> None:
    """One-line errors for an output folder that cannot hold a run."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder} is a file, not a folder: pick another --output")
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ConfigError(
            f"--output {folder} lies under {existing}, which is a file: pick another --output"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--output {folder} cannot be written ({existing} is read-only for this user): "
            "pick another --output"
        )


class OutputLock:
    """``with OutputLock(folder):`` -- this process alone trains into ``folder``.

    Creates ``folder`` if needed; on leaving, removes the lock file, and the folder too when
    this lock created it and nothing else was written (a run that failed to start leaves no
    trace).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.created: list[Path] = []  # the folders this lock made, deepest first

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--output {self.folder} cannot be created: {exc.strerror}") from exc
        while self.fd is None:
            fd = self._open()
            if fcntl is None:
                self.fd = fd
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(
                    f"--output {self.folder} is in use by another diffsynth train (PID {holder}): "
                    "wait for it to end, or pick another --output"
                ) from None
            if self._still_there(fd):
                self.fd = fd
            else:  # the holder removed the file between our open and flock: lock the new one
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"--output {self.folder} cannot be written ({exc.strerror}): pick another --output"
            ) from exc

    def _still_there(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: no one can lock this file next
        os.close(self.fd)
        self.fd = None
        for folder in self.created:
            try:
                folder.rmdir()  # only succeeds when the run wrote nothing
            except OSError:
                break


def check_previous_run(output: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to start afresh over a previous run: its checkpoints and states would be replaced
    and pruned. ``--resume`` continues it; ``--overwrite`` says replacing it is meant."""
    previous = sorted(output.glob("*.safetensors")) + sorted((output / "state").glob("step-*"))
    if resume or overwrite or not previous:
        return
    raise ConfigError(
        f"{output} already holds a run ({', '.join(p.name for p in previous[-3:])} ...): "
        "continue it with --resume latest, pick another --output, or pass --overwrite to replace it"
    )


# what a run writes into its output folder (checkpoints: those in its manifest, and the
# default names); --overwrite removes these and nothing else (the folder may hold other files)
RUN_FILES = ("training_args.json", "loss.png", "bad_samples*.jsonl", "step-*.safetensors",
             "epoch-*.safetensors", "final.safetensors")  # fmt: skip
RUN_FOLDERS = ("state", "logs", "samples")


def remove_previous_run(output: Path) -> str:
    """``--overwrite``: delete the previous run's files, so that nothing of it is resumed,
    pruned or mistaken for the new run's. Returns the line that says what went ("" when the
    folder held no run)."""
    from ...training.logger import MANIFEST, read_manifest

    states = len(list((output / "state").glob("step-*")))
    folders = [output / name for name in RUN_FOLDERS[1:] if (output / name).exists()]
    shutil.rmtree(output / "state", ignore_errors=True)  # first: no resume may find them
    listed = [output / e["file"] for e in read_manifest(output)]
    files = {p for p in listed if p.is_file()}
    files |= {p for pattern in RUN_FILES for p in output.glob(pattern) if p.is_file()}
    checkpoints = sum(1 for p in files if p.suffix == ".safetensors")
    if not (states or files or folders or (output / MANIFEST).exists()):
        return ""
    for path in sorted(files) + [output / MANIFEST]:
        path.unlink(missing_ok=True)
    for name in RUN_FOLDERS[1:]:
        shutil.rmtree(output / name, ignore_errors=True)
    return (
        f"--overwrite: removed the previous run from {output} "
        f"({checkpoints} checkpoint(s), {states} training state(s), its logs and samples)"
    )
