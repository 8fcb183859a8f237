"""cli/translate.py: library exceptions a user caused become one line; bugs stay tracebacks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from diffsynth_core import hookimpl
from diffsynth_core.cli.main import build_cli
from diffsynth_core.cli.translate import user_message
from diffsynth_core.plugins import PluginManager


def raised(function, *args):  # type: ignore[no-untyped-def]
    """The exception ``function(*args)`` raises, with its traceback (the rules read it)."""
    with pytest.raises(Exception) as caught:
        function(*args)
    return caught.value


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, "disk full while writing /data/run/final.safetensors"),
        (errno.EDQUOT, "disk quota exceeded while writing /data/run/final.safetensors"),
        (errno.EACCES, "permission denied: /data/run/final.safetensors"),
        (errno.EROFS, "read-only file system: /data/run/final.safetensors"),
        (errno.ENOTDIR, "/data/run/final.safetensors: a part of this path is a file"),
    ],
)
def test_os_errors_by_errno_name_the_file(code: int, expected: str) -> None:
    exc = OSError(code, os.strerror(code), "/data/run/final.safetensors")
    assert user_message(exc).startswith(expected)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    file = tmp_path / "prompts.txt"
    file.write_bytes("un caf\xe9\n".encode("latin-1"))
    message = user_message(raised(file.read_text, "utf-8"))
    assert message.startswith(f"{file} is not UTF-8 (byte b'\\xe9' at position 6")


def test_images_pil_cannot_read_or_write(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert user_message(raised(Image.open, tmp_path / "x.png")).startswith(
        "not an image file PIL can read: cannot identify image file"
    )
    image = Image.new("RGB", (4, 4))
    message = user_message(raised(image.save, tmp_path / "out.xyz"))
    assert message.startswith("cannot write an image with the file extension .xyz: give a name")


def test_safetensors_own_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    (tmp_path / "w.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{}")
    message = user_message(raised(load_file, str(tmp_path / "w.safetensors")))
    assert message.startswith("not a valid safetensors file (truncated or corrupt?): ")


def test_peft_target_modules_that_match_nothing() -> None:
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=2, target_modules=["nosuch"])
    exc = raised(inject_adapter_in_model, config, torch.nn.Sequential(torch.nn.Linear(2, 2)))
    message = user_message(exc)
    assert message.startswith("--lora-target-modules: Target modules {'nosuch'} not found")


def test_out_of_gpu_memory() -> None:
    import torch

    exc = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 ...")
    assert user_message(exc).startswith(
        "out of GPU memory (CUDA out of memory): lower --batch-size"
    )


def _bug_value_error() -> None:
    raise ValueError("too many values to unpack")


def _bug_os_error() -> None:
    raise OSError("our own code raised this")


@pytest.mark.parametrize(
    "exc",
    [
        raised(_bug_value_error),
        raised(_bug_os_error),  # errno-less, not from a loading library
        TypeError("'NoneType' object is not callable"),
        KeyError("dit"),
        AttributeError("no attribute 'to'"),
        RuntimeError("expected scalar type Float but found Half"),
        ZeroDivisionError("float division by zero"),
    ],
    ids=repr,
)
def test_bugs_are_not_user_errors(exc: Exception) -> None:
    assert user_message(exc) is None


class Failing:
    """A plugin whose commands fail the ways the group must tell apart."""

    @hookimpl
    def diffsynth_register_commands(self, cli: click.Group) -> None:
        @cli.command("disk-full")
        def disk_full() -> None:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/demo/final.safetensors")

        @cli.command("bug")
        def bug() -> None:
            raise AttributeError("'NoneType' object has no attribute 'to'")

        @cli.command("exit-3")
        @click.pass_context
        def exit_3(ctx: click.Context) -> None:
            ctx.exit(3)


@pytest.fixture
def cli(installed) -> click.Group:  # type: ignore[no-untyped-def]
    return build_cli(installed(PluginManager.with_plugins(Failing())))


def test_the_group_shows_a_user_caused_library_error_as_one_line(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["disk-full"], env={"DIFFSYNTH_DEBUG": ""})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr == (
        "error: disk full while writing /runs/demo/final.safetensors: free some space "
        "(or choose another folder) and run again\n"
    )


def test_a_bug_keeps_its_traceback_and_debug_shows_everything(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["bug"])
    assert isinstance(result.exception, AttributeError)  # uncaught: Python prints the traceback
    debug = CliRunner().invoke(cli, ["disk-full"], env={"DIFFSYNTH_DEBUG": "1"})
    assert isinstance(debug.exception, OSError) and debug.exception.errno == errno.ENOSPC


def test_clicks_own_exits_pass_through(cli: click.Group) -> None:
    assert CliRunner().invoke(cli, ["exit-3"]).exit_code == 3
    assert CliRunner().invoke(cli, ["disk-full", "--nope"]).exit_code == 2
