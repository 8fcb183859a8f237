"""LoRA mistakes a user makes at the command line: one ``error:`` line, exit 1, nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from diffsynth_core.cli.main import build_cli


@pytest.fixture
def cli(
    toy_manager: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    cache = tmp_path_factory.getbasetemp() / "diffsynth-cache"  # the tiny preset is built once
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(cache))
    monkeypatch.delenv("DIFFSYNTH_DEBUG", raising=False)

    def invoke(*args: Any) -> Result:
        return CliRunner().invoke(build_cli(toy_manager), [str(a) for a in args])

    return invoke


def _train(cli: Any, data: Path, out: Path, *extra: Any) -> Result:
    return cli(
        "train", "--model", "toy", "--preset", "tiny", "--dataset", data, "--output", out,
        "--height", 32, "--width", 32, *extra,
    )  # fmt: skip


def _one_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, (result.output, repr(result.exception))
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_unknown_target_module(cli: Any, image_folder: Path, tmp_path: Path) -> None:
    result = _train(cli, image_folder, tmp_path / "run", "--lora-target-modules", "to_q,nosuch")
    _one_error(result, "nosuch", "to_q", "to_k")
    assert not (tmp_path / "run").exists()


def test_rank_mismatch_in_generate_checkpoint_and_resume(
    cli: Any, image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rank4"
    assert _train(cli, image_folder, out, "--max-steps", 1).exit_code == 0
    lora = out / "final.safetensors"
    # a LoRA of another width: the toy's rank-4 LoRA with its A matrices cut
    from safetensors.torch import load_file, save_file

    cut = {k: v[:, :-1].contiguous() if ".lora_A." in k else v for k, v in load_file(lora).items()}
    save_file(cut, str(tmp_path / "cut.safetensors"))
    result = cli("generate", "--model", "toy", "--preset", "tiny", "--lora", tmp_path / "cut.safetensors",
                 "--prompt", "a cat", "--output", tmp_path / "x.png", "--height", 32, "--width", 32)  # fmt: skip
    _one_error(result, "cut.safetensors", ".lora_A.weight", "do not fit")
    again = _train(cli, image_folder, tmp_path / "r2", "--lora-rank", 2, "--lora-checkpoint", lora)
    _one_error(again, "final.safetensors", ".lora_A.weight", "(4, ", "(2, ")
    assert not (tmp_path / "r2").exists()  # refused before the run started
    resumed = _train(cli, image_folder, out, "--lora-rank", 2, "--resume", "latest", "--max-steps", 2)
    _one_error(resumed, "--lora-rank was 4", "2 now")  # the run's settings refuse it first
    # a state whose shapes do not fit the model (its training_args.json lost): the state check
    (out / "training_args.json").unlink()
    resumed = _train(cli, image_folder, out, "--lora-rank", 2, "--resume", "latest", "--max-steps", 2)
    _one_error(resumed, "trainable.safetensors", ".lora_A.default.weight", "(4, ", "(2, ")
