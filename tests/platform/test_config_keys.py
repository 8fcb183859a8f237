"""Config-file keys: dashes or underscores, top level or ``[train]``, never two of one kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffsynth_core.cli.run.config import read_config_file
from diffsynth_core.errors import ConfigError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text", ["learning-rate = 0.01\nmax_steps = 2\n", "[train]\nlearning-rate = 0.01\nmax_steps = 2\n"]
)
def test_keys_read_as_setting_names(tmp_path: Path, text: str) -> None:
    assert read_config_file(_config(tmp_path, text)) == {"learning_rate": 0.01, "max_steps": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "learning-rate = 0.01\nlearning_rate = 0.001\n",
            "sets learning_rate twice, as 'learning-rate' and as 'learning_rate'",
        ),
        (
            "[train]\nmax-steps = 2\nmax_steps = 3\n",
            "sets max_steps twice, as 'max-steps' and as 'max_steps'",
        ),
        (
            "seed = 1\n[train]\nmax_steps = 3\n",
            "has settings both under [train] and outside it (seed)",
        ),
    ],
)
def test_a_setting_given_twice_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config_file(_config(tmp_path, text))
    assert message in str(caught.value)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes('# caf\xe9\nseed = 1\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"run.toml is not UTF-8 text \(invalid continuation byte"):
        read_config_file(path)
