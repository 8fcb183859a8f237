"""``diffsynth train`` and ``diffsynth generate`` end to end on the toy family (in process)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
from click.testing import CliRunner, Result
from PIL import Image
from safetensors.torch import load_file

from diffsynth_core.cli.main import build_cli


@pytest.fixture
def cli(
    toy_manager: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    cache = tmp_path_factory.getbasetemp() / "diffsynth-cache"  # the tiny preset is built once
    monkeypatch.setenv("DIFFSYNTH_CACHE", str(cache))
    monkeypatch.delenv("DIFFSYNTH_DEBUG", raising=False)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(build_cli(toy_manager), [str(a) for a in args])

    return invoke


def _metrics(out: Path) -> list[dict[str, str]]:
    with (out / "logs" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float32)


def test_train_then_generate_with_the_lora(cli: Any, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (tmp_path / "prompts.txt").write_text("a red picture\n# not a prompt\n\na blue picture\n")
    result = cli(
        "train", "--model", "toy", "--preset", "tiny", "--dataset", image_folder, "--output", out,
        "--max-steps", 6, "--save-every-n-steps", 3, "--learning-rate", 1e-2, "--height", 32, "--width", 32,
        "--sample-prompts", tmp_path / "prompts.txt", "--sample-every", 3, "--caption-prefix", "photo of",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trainable   : 2,048 parameters; LoRA rank 4 on dit" in result.output
    assert "dataset     : " in result.output and "4 rows, 0 refused" in result.output
    names = {
        "step-000003.safetensors",
        "epoch-0.safetensors",
        "step-000006.safetensors",
        "final.safetensors",
    }
    assert {p.name for p in out.glob("*.safetensors")} == names  # 4 samples: epoch 0 ends at step 4
    assert [row["step"] for row in _metrics(out)] == ["1", "2", "3", "4", "5", "6"]
    assert Image.open(out / "loss.png").format == "PNG"
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"step-00000{s}-{i}.png" for s in (0, 3, 6) for i in (0, 1)
    ]
    args = json.loads((out / "training_args.json").read_text())
    assert args["config"]["max_steps"] == 6 and args["family_options"] == {
        "caption_prefix": "photo of"
    }
    with safetensors.safe_open(str(out / "final.safetensors"), "pt") as handle:
        assert (
            json.loads(handle.metadata()["diffsynth.training_args"])["config"]["learning_rate"]
            == 0.01
        )
    assert (out / "state" / "step-000006" / "trainer_state.json").exists()

    plain, tuned = tmp_path / "plain.png", tmp_path / "tuned.png"
    common = [
        "generate",
        "--model",
        "toy",
        "--preset",
        "tiny",
        "--prompt",
        "a red picture",
        "--height",
        32,
        "--width",
        48,
        "--steps",
        4,
    ]
    assert cli(*common, "--output", plain).exit_code == 0
    result = cli(*common, "--output", tuned, "--lora", out / "final.safetensors")
    assert result.exit_code == 0 and "8 module(s) changed" in result.output
    assert _pixels(plain).shape == (32, 48, 3)
    assert (
        np.abs(_pixels(plain) - _pixels(tuned)).mean() > 0.5
    )  # the trained LoRA changes the image


def test_config_file_with_flag_override(cli: Any, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(
        f'model = "toy"\npreset = "tiny"\ndataset = "{image_folder}"\noutput = "{out}"\n'
        'learning-rate = 0.002\nmax_steps = 2\nlora_rank = 2\nlora-target-modules = ["to_q", "to_v"]\n'
        'lora_format = "comfyui"\nheight = 32\nwidth = 32\ncaption_prefix = "a photo of"\n'
    )
    result = cli("train", "--config", config, "--max-steps", 3)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "training_args.json").read_text())
    assert saved["config"]["max_steps"] == 3  # the flag wins over the file
    assert saved["config"]["lora_rank"] == 2 and saved["config"]["learning_rate"] == 0.002
    assert saved["config"]["lora_target_modules"] == "to_q,to_v"
    assert saved["family_options"] == {"caption_prefix": "a photo of"}
    keys = load_file(str(out / "final.safetensors"))
    assert (
        all(k.startswith("diffusion_model.") for k in keys) and len(keys) == 2 * 2 * 2
    )  # 2 blocks x 2 modules x A/B
    assert all(v.shape[0] == 2 for k, v in keys.items() if ".lora_A." in k)  # rank 2 from the file
    assert len(_metrics(out)) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('model = "toy"\nlearning_rat = 0.1\n', "unknown setting(s) learning_rat"),
        ('model = "toy"\nlora_rank = "big"\n', "lora_rank in --config"),
        ('model = "toy"\nlora_rank = \n', "not valid TOML"),
        ('model = "toy"\nlora_rank = 0\n', "--lora-rank must be >= 1, not 0"),
    ],
)
def test_bad_config_files_are_one_line_errors(
    cli: Any, tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = cli("train", "--config", config, "--dataset", tmp_path)
    assert result.exit_code == 1 and message in result.output


def test_check_data_reports_and_sets_the_exit_status(cli: Any, image_folder: Path) -> None:
    good = cli("train", "--model", "toy", "--dataset", image_folder, "--check-data")
    assert good.exit_code == 0 and "4 ok, 0 refused" in good.output
    (image_folder / "image_2.png").unlink()
    bad = cli("train", "--model", "toy", "--dataset", image_folder, "--check-data")
    assert bad.exit_code == 1 and "3 ok, 1 refused" in bad.output and "image_2.png" in bad.output


def test_unknown_flags_and_missing_settings_say_what_to_do(cli: Any, image_folder: Path) -> None:
    unknown = cli("train", "--model", "toy", "--dataset", image_folder, "--caption-prefx", "x")
    assert unknown.exit_code == 1 and "--caption-prefix (str)" in unknown.output
    assert "--model is required" in cli("train", "--dataset", image_folder).output
    assert "--dataset DIR is required" in cli("train", "--model", "toy").output
    assert "no model family 'nope'" in cli("train", "--model", "nope").output
    for flags, message in (
        (("--lora-rank", "-3"), "--lora-rank must be >= 1, not -3"),
        (("--learning-rate", "0"), "--learning-rate must be > 0"),
        (("--max-timestep-boundary", "1.5"), "timestep boundaries must satisfy"),
    ):
        result = cli("train", "--model", "toy", "--dataset", image_folder, *flags)
        assert result.exit_code == 1 and message in result.output, result.output


def test_bf16_mixed_precision_trains(cli: Any, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli(
        "train",
        "--model",
        "toy",
        "--preset",
        "tiny",
        "--dataset",
        image_folder,
        "--output",
        out,
        "--max-steps",
        2,
        "--mixed-precision",
        "bf16",
        "--height",
        32,
        "--width",
        32,
    )
    assert result.exit_code == 0, result.output
    assert "precision bf16" in result.output
    assert all(np.isfinite(float(row["loss"])) for row in _metrics(out))
    assert all(
        v.dtype.is_floating_point and v.isfinite().all()
        for v in load_file(str(out / "final.safetensors")).values()
    )


def test_generate_refuses_a_missing_lora_before_loading(cli: Any, tmp_path: Path) -> None:
    result = cli(
        "generate", "--model", "toy", "--preset", "tiny", "--prompt", "x",
        "--lora", tmp_path / "absent.safetensors", "--output", tmp_path / "x.png",
    )  # fmt: skip
    assert result.exit_code == 2 and "absent.safetensors' does not exist" in result.output
    assert not (tmp_path / "x.png").exists()


def test_a_previous_run_is_never_replaced_by_accident(
    cli: Any, image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ("train", "--model", "toy", "--preset", "tiny", "--dataset", image_folder,
            "--output", out, "--max-steps", 2, "--learning-rate", 1e-2)  # fmt: skip
    assert cli(*args).exit_code == 0
    before = (out / "final.safetensors").read_bytes()
    again = cli(*args, "--seed", 7)
    assert again.exit_code == 1 and "--resume latest" in again.output and "--overwrite" in again.output
    assert (out / "final.safetensors").read_bytes() == before
    assert cli(*args, "--seed", 7, "--overwrite").exit_code == 0
    assert (out / "final.safetensors").read_bytes() != before
