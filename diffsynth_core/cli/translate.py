"""One place that turns exceptions into the one-line errors a user can act on.

The CLI group (``cli/main.py``) asks :func:`user_message` about every exception that reaches
it. Our own :class:`~diffsynth_core.errors.DiffSynthError` says what to do already; the
exceptions of the libraries we call (the OS, safetensors, PIL, peft, imageio, torch) are
recognised here by type, errno and the library that raised them, and get a message that says
what went wrong with which file. Anything else -- an ``AttributeError``, a ``TypeError``, a
``ValueError`` raised by our own code -- is a bug: :func:`user_message` returns None and the
traceback is shown, as it must be for a bug report.

Light on purpose: no library is imported to recognise its exceptions (the type's name and
the module of the raising frame are enough), so ``diffsynth --help`` stays fast.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Callable

from ..errors import DiffSynthError

Rule = Callable[[BaseException], "str | None"]

_OS_ERRORS = {
    errno.ENOSPC: "disk full while writing {path}: free some space (or choose another folder) and run again",
    errno.EDQUOT: "disk quota exceeded while writing {path}: free some space (or choose another folder) and run again",
    errno.EACCES: "permission denied: {path}: choose another path or fix its permissions",
    errno.EPERM: "permission denied: {path}: choose another path or fix its permissions",
    errno.EROFS: "read-only file system: {path}: choose a path you can write to",
    errno.ENOTDIR: "{path}: a part of this path is a file, not a folder",
    errno.EISDIR: "{path} is a folder; give a file name",
    errno.EEXIST: "{path} already exists and is not a folder; choose another path or remove it",
    errno.ENOENT: "no such file or folder: {path}",
    errno.ENAMETOOLONG: "file name too long: {path}",
    errno.EIO: "input/output error on {path} (a failing disk or network mount?)",
}  # fmt: skip

# libraries whose OSError/ValueError without errno mean "this file cannot be loaded"
_LOADERS = ("diffusers", "transformers", "huggingface_hub", "safetensors", "imageio", "PIL")


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user caused and can fix; None for a bug."""
    for rule in _RULES:
        message = rule(exc)
        if message:
            return " ".join(message.split())
    return None


def raised_in(exc: BaseException) -> str:
    """The top-level package of the innermost frame that raised ``exc`` (``PIL``, ``peft``)."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    if not frames:
        return ""
    return str(frames[-1][0].f_globals.get("__name__", "")).split(".")[0]


def _kind(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _ours(exc: BaseException) -> str | None:
    return str(exc) if isinstance(exc, DiffSynthError) else None


def _not_utf8(exc: BaseException) -> str | None:
    if not isinstance(exc, UnicodeDecodeError):
        return None
    bad = exc.object[exc.start : exc.start + 1]
    return (
        f"{_decoded_file(exc) or 'a text file'} is not UTF-8 (byte {bad!r} at position "
        f"{exc.start}: {exc.reason}); save it as UTF-8 and run again"
    )


def _decoded_file(exc: BaseException) -> str | None:
    """The file ``Path.read_text()`` was reading when the decode failed (the error has no name)."""
    from pathlib import PurePath

    frames = list(traceback.walk_tb(exc.__traceback__))[-3:]  # read_text <- io <- codecs
    for frame, _ in reversed(frames):
        owner = frame.f_locals.get("self")
        if isinstance(owner, PurePath):
            return str(owner)
    return None


def _image(exc: BaseException) -> str | None:
    names = _kind(exc)
    if "UnidentifiedImageError" in names:
        return f"not an image file PIL can read: {exc}"
    if "DecompressionBombError" in names:
        return f"image too large to decode safely: {exc}"
    if raised_in(exc) == "PIL" and isinstance(exc, ValueError) and "file extension" in str(exc):
        ext = str(exc).rpartition(":")[2].strip() or "(none)"
        return (
            f"cannot write an image with the file extension {ext}: give a name ending in "
            ".png, .jpg or .webp (.mp4 only for video families)"
        )
    return None


def _memory(exc: BaseException) -> str | None:
    if "OutOfMemoryError" in _kind(exc):  # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError
        first = str(exc).split(". ")[0]
        return (
            f"out of GPU memory ({first}): lower --batch-size, --height/--width or "
            "--max-pixels, or use --gradient-checkpointing / --mixed-precision bf16"
        )
    if isinstance(exc, MemoryError):
        return "out of memory: lower --batch-size, --height/--width or --max-pixels"
    return None


def _safetensors(exc: BaseException) -> str | None:
    if "SafetensorError" in _kind(exc) or "HeaderTooLarge" in str(exc):
        return f"not a valid safetensors file (truncated or corrupt?): {exc}"
    return None


def _os_error(exc: BaseException) -> str | None:
    if not isinstance(exc, OSError):
        return None
    if exc.errno is None:  # a loader's "cannot load this file"; our own OSErrors are bugs
        return str(exc) if raised_in(exc) in _LOADERS else None
    path = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    template = _OS_ERRORS.get(exc.errno)
    if template is None:
        return f"{exc.strerror or exc}: {path}" if path else str(exc)
    return template.format(path=path or "(a file)")


def _peft(exc: BaseException) -> str | None:
    if raised_in(exc) != "peft" or not isinstance(exc, ValueError):
        return None
    if "target modules" in str(exc).lower() or "NoMatchingPeftModuleError" in _kind(exc):
        return f"--lora-target-modules: {exc} (names of modules inside --lora-base-model)"
    return None


def _video(exc: BaseException) -> str | None:
    if raised_in(exc) == "imageio" and isinstance(exc, (ValueError, RuntimeError, OSError)):
        return f"cannot read or write the video: {exc}"
    return None


def _unpickling(exc: BaseException) -> str | None:
    if "UnpicklingError" in _kind(exc):
        return f"not a readable torch/pickle weight file: {exc}"
    return None


_RULES: tuple[Rule, ...] = (
    _ours, _not_utf8, _image, _memory, _safetensors, _os_error, _peft, _video, _unpickling,
)  # fmt: skip
