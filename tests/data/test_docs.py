"""docs/data.md stays true: every Python block runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from .media import solid, write_csv

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def expected_output(code: str) -> list[str]:
    """The comments of print lines: inline (`print(x)  # out`), then whole-line ones below."""
    expected, after_print = [], False
    for line in code.splitlines():
        if line.startswith("# ") and after_print:
            expected.append(line[2:])
            continue
        after_print = line.lstrip().startswith("print(")
        if after_print and "  # " in line:
            expected.append(line.split("  # ", 1)[1])
    return expected


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_block(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    solid(tmp_path / "data" / "cat.png", (64, 48))
    solid(tmp_path / "data" / "dog.jpg", (48, 64))
    write_csv(
        tmp_path / "data" / "metadata.csv",
        "prompt,image",
        "a cat on a sofa,cat.png",
        "a dog,dog.jpg",
        "nobody,lost.png",
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_block__"})
    printed = out.getvalue().splitlines()
    expected = expected_output(code)
    assert len(printed) == len(expected), printed
    for got, want in zip(printed, expected, strict=True):
        assert want.startswith(got), (got, want)  # a comment may explain after the value
