"""Each ``diffsynth train`` setting is declared once (training/settings.py) and everything else
-- the click options, TrainConfig, the config-file checks, the range checks, the resume rules,
the runner's options, docs/training.md's flag table -- follows from that declaration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.run.config import TrainConfig, split_file_values
from diffsynth_core.cli.train import train as train_command
from diffsynth_core.errors import ConfigError
from diffsynth_core.training.options import RunOptions
from diffsynth_core.training.settings import SETTINGS, type_hint

from .conftest import toy_dataset, toy_module

ROOT = Path(__file__).resolve().parents[2]


def test_no_setting_is_declared_twice() -> None:
    twice = [name for name, n in Counter(s.name for s in SETTINGS).items() if n > 1]
    assert twice == []
    flags = [s.flag for s in SETTINGS]
    assert len(set(flags)) == len(flags)


def test_every_click_option_of_train_is_a_declared_setting() -> None:
    """A flag added to the command by hand (not through SETTINGS) fails here."""
    declared = {s.name for s in SETTINGS}
    options = {p.name for p in train_command.params} - {"config_file"}
    assert options == declared
    by_name = {p.name: p for p in train_command.params}
    for s in SETTINGS:
        option = by_name[s.name]
        assert option.help == s.help and option.default is None  # None: "not given"
        assert option.opts == [s.flag]
        if s.negatable:
            assert option.secondary_opts == ["--no-" + s.flag[2:]]


def test_train_config_is_the_settings() -> None:
    hints = get_type_hints(TrainConfig)
    assert [f.name for f in fields(TrainConfig)] == [s.name for s in SETTINGS]
    assert all(hints[s.name] == type_hint(s) for s in SETTINGS)
    config = TrainConfig()
    assert all(getattr(config, s.name) == s.default for s in SETTINGS)
    assert config.as_json() == {s.name: s.default for s in SETTINGS}


def _train_section() -> str:
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    return text.split("## `diffsynth train`", 1)[1].split("\n## ", 1)[0]


def test_every_setting_is_in_the_flag_table_of_docs_training_md() -> None:
    rows = [line for line in _train_section().splitlines() if line.startswith("| `--")]
    first_cells = " ".join(line.split("|")[1] for line in rows)
    flags = set(re.findall(r"`(--[a-z0-9-]+)", first_cells))
    missing = [s.flag for s in SETTINGS if s.flag not in flags]
    assert missing == []
    undeclared = flags - {s.flag for s in SETTINGS} - {"--config", "--no-gradient-checkpointing"}
    assert undeclared == set()  # a row for a flag the command no longer has


# A subprocess: it adds one Setting to SETTINGS before any module derived from it is imported,
# then looks for it in every place that derives from the declarations.
FAKE_SETTING = """
import json, sys, dataclasses
from diffsynth_core.training import settings
fake = settings.Setting("fake_knob", int, 5, "run", low=2, on_resume="refuse", owner="runner",
                        help="a knob declared only in this test [5]")
settings.SETTINGS = (*settings.SETTINGS, fake)
settings.BY_NAME = {s.name: s for s in settings.SETTINGS}
from click.testing import CliRunner
from diffsynth_core.cli.train import train
from diffsynth_core.errors import ConfigError
from diffsynth_core.cli.run import config, resume_settings
from diffsynth_core.training import options

found = {}
found["help"] = "a knob declared only in this test [5]" in CliRunner().invoke(train, ["--help"]).output
values, _ = config.split_file_values({"fake_knob": 7}, set(), "--config t.toml")
found["toml"] = config.TrainConfig(**values).fake_knob
try:
    config.split_file_values({"fake_knob": "x"}, set(), "--config t.toml")
except ConfigError as exc:
    found["toml_type"] = str(exc)
try:
    config.TrainConfig(fake_knob=1)
except ConfigError as exc:
    found["range"] = str(exc)
try:
    options.RunOptions.create(fake_knob=1)
except ConfigError as exc:
    found["runner_range"] = str(exc)
found["runner_default"] = options.RunOptions.create().fake_knob
found["default"] = config.TrainConfig().fake_knob
found["resume_refuses"] = "fake_knob" in resume_settings.BREAKING
print(json.dumps(found))
"""


def test_one_declaration_reaches_help_toml_range_check_resume_and_runner() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FAKE_SETTING], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {
        "help": True,
        "toml": 7,
        "toml_type": "fake_knob in --config t.toml must be int, not 'x'",
        "range": "--fake-knob must be >= 2, not 1",
        "runner_range": "fake_knob must be >= 2, not 1",
        "runner_default": 5,
        "default": 5,
        "resume_refuses": True,
    }


def test_config_file_values_are_checked_by_the_declared_type_and_bounds() -> None:
    with pytest.raises(ConfigError, match="lora_rank in --config f.toml must be int, not 2.5"):
        split_file_values({"lora_rank": 2.5}, set(), "--config f.toml")
    values, _ = split_file_values({"learning_rate": 1}, set(), "--config f.toml")  # int is a float
    assert TrainConfig(**values).learning_rate == 1
    with pytest.raises(ConfigError, match="--lora-rank must be >= 1, not 0"):
        TrainConfig(lora_rank=0)
    with pytest.raises(ConfigError, match="--learning-rate must be a finite number, not nan"):
        TrainConfig(learning_rate=float("nan"))


def test_the_runners_options_share_the_declared_bounds() -> None:
    with pytest.raises(ConfigError, match="warmup_steps must be >= 0, not -1"):
        RunOptions.create(warmup_steps=-1)
    with pytest.raises(ConfigError, match="batch_size must be int, not True"):
        RunOptions.create(batch_size=True)
    # the objects' own settings default to "as the object was built"
    built = RunOptions.create()
    assert (built.gradient_accumulation_steps, built.on_bad_sample) == (None, None)
    assert (built.save_every_n_steps, built.keep_last) == (None, None)


def test_seed_style_options_leave_the_callers_objects_as_built(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    """Options for what the dataset and logger hold train with them, on copies."""
    from accelerate import Accelerator

    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.runner import launch_training_task

    dataset = toy_dataset(tmp_path / "data", n=2)
    logger = ModelLogger(tmp_path / "out", remove_prefix_in_ckpt="pipe.dit.", save_every_epoch=False)
    result = launch_training_task(
        Accelerator(cpu=True), dataset, toy_module(tiny_toy), logger, 1e-3, max_steps=2,
        save_every_n_steps=1, keep_last=1, on_bad_sample="error", progress=False,
    )  # fmt: skip
    assert result.steps == 2
    kept = sorted(p.name for p in (tmp_path / "out").glob("step-*.safetensors"))
    assert kept == ["step-000002.safetensors"]  # saved every step, only the last one kept
    assert (logger.save_every_n_steps, logger.keep_last) == (None, None)
    assert dataset.on_bad_sample == "skip"


def test_an_accumulation_the_accelerator_was_not_built_with_is_an_error(
    toy_manager: Any, tiny_toy: Path, tmp_path: Path
) -> None:
    from accelerate import Accelerator

    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.runner import launch_training_task

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
    logger = ModelLogger(tmp_path / "out")
    with pytest.raises(ConfigError, match=r"Accelerator\(gradient_accumulation_steps=2\)"):
        launch_training_task(
            accelerator, toy_dataset(tmp_path / "data", n=2), toy_module(tiny_toy), logger,
            gradient_accumulation_steps=2, progress=False,
        )  # fmt: skip
    assert accelerator.gradient_accumulation_steps == 1
    assert not (tmp_path / "out").exists()


def test_diffsynth_train_seeds_once_and_configures_nothing_after_construction(
    toy_manager: Any,
    image_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import accelerate.utils

    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.training import runner

    monkeypatch.setenv("DIFFSYNTH_CACHE", str(tmp_path / "cache"))
    seeds: list[int] = []
    real_seed = accelerate.utils.set_seed
    monkeypatch.setattr(accelerate.utils, "set_seed", lambda s, *a, **k: (seeds.append(s), real_seed(s, *a, **k)))
    copies: list[Any] = []
    real_copy = runner._copy_with
    monkeypatch.setattr(
        runner, "_copy_with", lambda built, **s: copies.append(real_copy(built, **s) is not built)
        or real_copy(built, **s),
    )  # fmt: skip
    result = CliRunner().invoke(
        build_cli(toy_manager),
        ["train", "--model", "toy", "--preset", "tiny", "--dataset", str(image_folder), "--output",
         str(tmp_path / "run"), "--max-steps", "2", "--seed", "7", "--save-every-n-steps", "1",
         "--keep-last", "1", "--on-bad-sample", "error", "--gradient-accumulation-steps", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seeds == [7]  # building the tiny preset seeds its own generator, not the run
    assert copies == [False, False]  # the dataset and logger were built with their settings
    saved = json.loads((tmp_path / "run" / "training_args.json").read_text())["config"]
    assert set(saved) == {s.name for s in SETTINGS}  # training_args.json: every setting
    # the start-up summary lists the settings not at their default, by section
    assert "  saving      : save_every_n_steps 1, keep_last 1\n" in result.output
    assert "  optimization: seed 7\n" in result.output
    assert "on_bad_sample error" in result.output
    assert (saved["keep_last"], saved["gradient_accumulation_steps"]) == (1, 2)
