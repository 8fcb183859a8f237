"""Bad input through the real CLI: one ``error:`` line, exit status 1, never a traceback.

Each row of ``ROWS`` is a command a user can type with one thing wrong (a file that is not
what it claims, a value out of range, a path that cannot be written). Every row runs through
``build_cli`` in this process (click's CliRunner, as the other CLI tests do, for speed), and a
sample of them also runs as a real ``diffsynth`` process, which is what a user sees.

Placeholders in a row's arguments name files built once per module by ``inputs``:
``{tiny}`` the toy model, ``{data}`` a good dataset, ``{out}`` a fresh folder per row, and
the bad files below.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffsynth_core.cli.main import build_cli

TOY_CLI = Path(__file__).resolve().parents[1] / "training" / "toy_cli.py"


@dataclass(frozen=True)
class Row:
    """One bad command: its arguments (with placeholders) and a part of the expected error."""

    args: tuple[str, ...]
    expect: str  # a fragment of the error line (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)
    family: str = "toy"  # "qwen-image": needs the installed plugin


TRAIN = {
    "--model": "toy", "--model-path": "{tiny}", "--dataset": "{data}", "--output": "{out}/run",
    "--max-steps": "1", "--height": "32", "--width": "32",
}  # fmt: skip
GENERATE = {
    "--model": "toy", "--model-path": "{tiny}", "--prompt": "a red picture", "--height": "32",
    "--width": "32", "--steps": "1", "--output": "{out}/a.png",
}  # fmt: skip


def _command(
    name: str, base: dict[str, str], extra: tuple[str, ...], changes: dict[str, str | None]
) -> tuple[str, ...]:
    flags = dict(base)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            flags.pop(flag, None)
        else:
            flags[flag] = value
    return (name, *(part for pair in flags.items() for part in pair), *extra)


def train(*extra: str, expect: str, **changes: str | None) -> Row:
    """``diffsynth train`` on the toy with ``changes`` to its flags (None drops one)."""
    return Row(_command("train", TRAIN, extra, changes), expect)


def generate(*extra: str, expect: str, **changes: str | None) -> Row:
    return Row(_command("generate", GENERATE, extra, changes), expect)


ROWS: dict[str, Row] = {
    # --- config files (issue 9 items 13, 20)
    "toml-not-utf8": train("--config", "{latin1_toml}", expect="not UTF-8"),
    "toml-conflicting-keys": train("--config", "{conflict_toml}", expect="learning-rate"),
    "toml-train-table-and-top-level": train("--config", "{split_toml}", expect="both under [train] and outside it (max_steps)"),
    "toml-missing": train("--config", "{out}/nope.toml", expect="no such file"),
    "toml-invalid": train("--config", "{invalid_toml}", expect="not valid TOML"),
    "toml-unknown-key": train("--config", "{unknown_toml}", expect="unknown setting"),
    "toml-wrong-type": train("--config", "{wrong_type_toml}", expect="must be float"),
    # --- model files (item 13)
    "train-model-path-truncated-file": train(model_path="{truncated}", expect="truncated.safetensors"),
    "generate-model-path-truncated-file": generate(model_path="{truncated}", expect="truncated.safetensors"),
    "generate-model-path-folder-truncated-weights": generate(model_path="{tiny_truncated}", expect="truncated or corrupt"),
    "train-model-path-folder-truncated-weights": train(model_path="{tiny_truncated}", expect="truncated or corrupt"),
    "generate-model-path-other-family": generate(model_path="{other_family}", expect="QwenImageTransformer2DModel"),
    "train-model-path-other-family": train(model_path="{other_family}", expect="QwenImageTransformer2DModel"),
    "generate-model-path-missing": generate(model_path="{out}/nowhere", expect="does not exist"),
    "generate-model-path-empty-folder": generate(model_path="{empty}", expect="no files match"),
    "generate-preset-and-model-path": generate("--preset", "tiny", expect="either --preset or --model-path"),
    "qwen-model-path-toy-folder": Row(
        _command("generate", {**GENERATE, "--model": "qwen-image"}, (), {}),
        "could not load model family 'qwen-image'", family="qwen-image",
    ),
    "qwen-model-path-truncated-file": Row(
        _command("generate", {**GENERATE, "--model": "qwen-image", "--model-path": "{truncated}"}, (), {}),
        "truncated.safetensors is a file, but --model-path wants a folder", family="qwen-image",
    ),
    # --- Qwen-Image-Edit: more edit images than the version takes (before any weight loads)
    "edit-two-edit-images": Row(
        _command("generate", {**GENERATE, "--model": "qwen-image-edit"}, ("--edit-image", "{data}/image_0.png", "--edit-image", "{data}/image_1.png"), {}),
        "qwen-image-edit takes at most 1 edit image(s), got 2", family="qwen-image-edit",
    ),
    "edit-plus-four-edit-images": Row(
        _command("generate", {**GENERATE, "--model": "qwen-image-edit-plus"}, ("--edit-image", "{data}/image_0.png,{data}/image_1.png", "--edit-image", "{data}/image_0.png,{data}/image_1.png"), {}),
        "qwen-image-edit-plus takes at most 3 edit image(s), got 4", family="qwen-image-edit-plus",
    ),
    "unknown-model": generate(model="nosuch", expect="no model family 'nosuch'"),
    "preset-cache-under-a-file": Row(
        _command("generate", GENERATE, ("--preset", "tiny"), {"model_path": None}),
        "a_file", env={"DIFFSYNTH_CACHE": "{a_file}/cache"},
    ),
    # --- LoRA
    "train-lora-target-modules-nosuch": train(lora_target_modules="nosuch", expect="nosuch"),
    "train-lora-format-nosuch": train(lora_format="nosuch", expect="nosuch"),
    "train-lora-rank-0": train(lora_rank="0", expect="--lora-rank"),
    "train-lora-checkpoint-truncated": train(lora_checkpoint="{truncated}", expect="truncated.safetensors"),
    "train-lora-base-model-nosuch": train(lora_base_model="nosuch", expect="nosuch"),
    "train-lora-type-lokr-diffusers": train(lora_type="lokr", expect="--lora-format comfyui"),
    "train-lora-type-loha-dora": train("--use-dora", lora_type="loha", lora_format="comfyui", expect="--use-dora"),
    "train-lora-dropout-1": train(lora_dropout="1", expect="--lora-dropout"),
    "train-dora-comfyui": train("--use-dora", lora_format="comfyui", expect="--lora-format diffusers"),
    "train-merge-lora-truncated": train(merge_lora="{truncated}", expect="truncated.safetensors"),
    # --- EMA and validation (issue 15 items 3, 4)
    "train-ema-decay-1": train(ema_decay="1", expect="--ema-decay"),
    "train-validation-split-1": train(validation_split="1", expect="--validation-split"),
    "train-validation-every-alone": train(validation_every="2", expect="--validation-every needs"),
    "train-validation-dataset-missing": train(validation_dataset="{out}/nosuch", expect="nosuch"),
    "generate-lora-truncated": generate("--lora", "{truncated}", expect="truncated.safetensors"),
    "generate-lora-scale-nan": generate("--lora", "{lora}", "--lora-scale", "nan", expect="--lora-scale"),
    "generate-lora-base-model-nosuch": generate("--lora", "{lora}", "--lora-base-model", "nosuch", expect="nosuch"),
    # --- generate's output and settings (item 10)
    "generate-output-no-extension": generate(output="{out}/picture", expect="extension"),
    "generate-output-unknown-extension": generate(output="{out}/a.xyz", expect=".xyz"),
    "generate-output-is-a-folder": generate(output="{out}", expect="folder"),
    "generate-output-mp4-for-an-image-family": generate(output="{out}/a.mp4", expect=".mp4"),
    "generate-output-under-a-file": generate(output="{a_file}/a.png", expect="a_file"),
    "generate-output-read-only": generate(output="{read_only}/a.png", expect="read_only"),
    "generate-steps-0": generate(steps="0", expect="--steps"),
    "generate-steps-negative": generate(steps="-3", expect="--steps"),
    "generate-height-0": generate(height="0", expect="--height"),
    "generate-init-image-corrupt": generate("--init-image", "{corrupt_png}", expect="corrupt.png"),
    "generate-init-image-missing": generate("--init-image", "{out}/no.png", expect="does not exist"),
    "generate-family-option-bad-float": generate("--denoising-strength", "lots", expect="--denoising-strength"),
    "generate-unknown-flag": generate("--no-such-flag", "1", expect="--no-such-flag"),
    # --- train's output (item 10)
    "train-output-is-a-file": train(output="{a_file}", expect="a_file"),
    "train-output-under-a-file": train(output="{a_file}/run", expect="a_file"),
    "train-output-read-only": train(output="{read_only}/run", expect="read_only"),
    # --- train's settings (item 10)
    "train-learning-rate-nan": train(learning_rate="nan", expect="not nan"),
    "train-learning-rate-inf": train(learning_rate="inf", expect="not inf"),
    "train-batch-size-0": train(batch_size="0", expect="--batch-size"),
    "train-max-steps-0": train(max_steps="0", expect="--max-steps"),
    "train-gradient-accumulation-0": train(gradient_accumulation_steps="0", expect="--gradient-accumulation-steps"),
    "train-max-grad-norm-nan": train(max_grad_norm="nan", expect="not nan"),
    "train-timestep-boundaries-reversed": train(
        "--min-timestep-boundary", "0.8", "--max-timestep-boundary", "0.2", expect="timestep boundaries"
    ),
    "train-loss-nosuch": train(loss="nosuch", expect="no loss named 'nosuch'"),
    "train-optimizer-nosuch": train(optimizer="NoSuchOptimizer", expect="NoSuchOptimizer"),
    "train-unknown-family-flag": train("--control-image", "x.png", expect="--control-image"),
    # --- split training: train --cache (issue 12)
    "train-cache-missing-folder": train(cache="{out}/no-cache", expect="no such folder; build it with `diffsynth cache"),
    "train-cache-not-a-cache": train(cache="{empty}", expect="not a diffsynth cache"),
    "train-cache-other-family": train(cache="{other_family_cache}", expect="holds the features of 'qwen-image', not 'toy'"),
    "train-cache-missing-rows": train(cache="{toy_cache}", dataset="{data3}", expect="is missing rows 2 (image_2.png)"),
    # --- data (items 10, 13)
    "train-dataset-missing": train(dataset="{out}/no-data", expect="no-data"),
    "train-dataset-empty": train(dataset="{empty}", expect="empty"),
    "train-dataset-is-a-file": train(dataset="{a_file}", expect="a_file"),
    "train-dataset-missing-column": train(dataset="{no_prompt_data}", expect="prompt"),
    "train-dataset-all-images-corrupt": train(dataset="{corrupt_data}", expect="every sample"),
    "train-metadata-missing": train(metadata="{out}/none.csv", expect="none.csv"),
    "train-metadata-not-utf8": train(metadata="{latin1_csv}", expect="UTF-8"),
    "train-sample-prompts-missing": train(sample_prompts="{out}/none.txt", expect="none.txt"),
    "train-sample-prompts-not-utf8": train(sample_prompts="{latin1_txt}", expect="latin1.txt is not UTF-8"),
    "train-resume-not-a-state": train(resume="{data}", expect="trainer_state"),
    "generate-lora-not-a-lora": generate("--lora", "{tiny}/vae/diffusion_pytorch_model.safetensors", expect="LoRA"),
    "train-lora-checkpoint-not-a-lora": train(lora_checkpoint="{tiny}/vae/diffusion_pytorch_model.safetensors", expect="LoRA"),
    "generate-cfg-scale-nan": generate(cfg_scale="nan", expect="--cfg-scale"),
    "train-sample-every-0": train(sample_every="0", expect="--sample-every"),
    "train-warmup-negative": train(warmup_steps="-1", expect="--warmup-steps"),
    "train-num-workers-negative": train(num_workers="-1", expect="--num-workers"),
    "train-lora-alpha-nan": train(lora_alpha="nan", expect="--lora-alpha"),
    "train-weight-decay-nan": train(weight_decay="nan", expect="nan"),
    "train-trainable-models-nosuch": train("--trainable-models", "nosuch", lora_base_model=None, expect="nosuch"),
    "train-data-file-keys-nosuch": train(data_file_keys="nosuch", expect="nosuch"),
    "train-metadata-is-garbage": train(metadata="{truncated}", expect="truncated.safetensors"),
    "train-max-pixels-0": train(max_pixels="0", height=None, width=None, expect="--max-pixels"),
    "train-resume-missing-folder": train(resume="{out}/state/step-7", expect="step-7"),
    # --- timesteps, loss, captions (issue 15 items 1, 2)
    "train-caption-extension-no-dot": train(caption_extension="txt", expect="caption_extension must be a suffix"),
    "train-caption-dropout-above-1": train(caption_dropout="1.5", expect="--caption-dropout must be <= 1"),
    "train-flow-shift-0": train(flow_shift="0", expect="--flow-shift must be > 0"),
    "train-flow-shift-and-dynamic-shift": train("--dynamic-shift", flow_shift="2", expect="give one of them"),
    # --- peers' spellings (issue 15 item 10)
    "train-peer-flag-learning_rate": train("--learning_rate", "1e-4", expect="spelt with dashes: --learning-rate"),
    "train-peer-flag-output_dir": train("--output_dir", "{out}/x", expect="diffsynth train's flag is --output"),
    "train-peer-flag-network_dim": train("--network_dim", "16", expect="diffsynth train's flag is --lora-rank"),
    "train-peer-flag-max_train_epochs": train("--max_train_epochs=3", expect="diffsynth train's flag is --num-epochs"),
    "train-peer-flag-dataset_base_path": train("--dataset_base_path", "{data}", expect="diffsynth train's flag is --dataset"),
    "train-peer-flag-no-equivalent": train("--network_module", "networks.lora", expect="no equivalent"),
    "toml-peer-key-dataset_base_path": train("--config", "{peer_ds_toml}", expect="diffsynth train's key is dataset"),
    "toml-peer-key-network_dim": train("--config", "{peer_musubi_toml}", expect="diffsynth train's key is lora_rank"),
    "toml-peer-key-max_train_epochs": train("--config", "{peer_kohya_toml}", expect="diffsynth train's key is num_epochs"),
    "convert-config-bad-yaml": Row(("convert-config", "{bad_yaml}"), "not a valid ai-toolkit file"),
    "convert-config-bad-toml": Row(("convert-config", "{invalid_toml}"), "not a valid musubi-tuner file"),
    # --- low-memory training (issue 13)
    "train-base-precision-unknown": train(base_precision="fp3", expect="--base-precision 'fp3' is unknown"),
    "train-base-precision-family-declares-none": train(base_precision="fp8", expect="declares no base models"),
    "train-optimizer-offload-without-gpu": train("--optimizer-offload", expect="--optimizer-offload"),
    "train-base-precision-int8-full-training": Row(
        _command("train", {**TRAIN, "--model": "qwen-image"}, ("--base-precision", "int8", "--trainable-models", "dit"), {}),
        "--trainable-models trains it fully", family="qwen-image",
    ),
    "train-base-precision-bf16-without-bf16-compute": Row(
        _command("train", {**TRAIN, "--model": "qwen-image"}, ("--base-precision", "bf16"), {}),
        "add --mixed-precision bf16", family="qwen-image",
    ),
    # --- block swap (issue 13 item 2)
    "train-blocks-to-swap-negative": train(blocks_to_swap="-1", expect="--blocks-to-swap must be >= 0"),
    # the toy family declares the DiT's blocks only: a LoRA on its VAE has none to swap
    "train-blocks-to-swap-no-blocks": train(blocks_to_swap="1", lora_base_model="vae", lora_target_modules="decoder", expect="family 'toy' declares none"),
    "train-blocks-to-swap-full-training": train(
        "--trainable-models", "dit", blocks_to_swap="1", lora_base_model=None, expect="full training"
    ),
    "train-attention-without-dispatcher": train(attention="math", expect="has no diffusers attention dispatcher"),
    "train-compile-no-blocks": train("--compile", lora_base_model="vae", lora_target_modules="decoder", expect="--compile needs the transformer blocks"),
    "train-blocks-to-swap-too-many": Row(
        _command("train", {**TRAIN, "--model": "qwen-image", "--preset": "tiny", "--blocks-to-swap": "3"}, (), {"model_path": None}),
        "--blocks-to-swap 3: 'dit' of 'qwen-image' has 2 blocks", env={"DIFFSYNTH_CACHE": "{out}/cache"}, family="qwen-image",
    ),
    # --- trackers, samples, model files (issue 15 items 7, 5, 8)
    "train-report-to-unknown": train(report_to="tensorbord", expect="not a tracker accelerate knows"),
    "train-sample-prompts-toml-no-table": train(sample_prompts="{prompts_no_table_toml}", expect="expected [[prompts]] tables"),
    "train-sample-prompts-missing-image": train(sample_prompts="{prompts_missing_image_toml}", expect="init_image: no such image"),
    "train-transformer-no-such-file": train(transformer="{out}/none.safetensors", expect="none.safetensors: no such file"),
    "train-vae-is-a-folder": train(vae="{data}", expect="is a folder: give one checkpoint file"),
    "train-report-to-not-installed": train(report_to="trackio", expect="trackio is not installed (pip install trackio"),
    # --- the memory estimate (issue 13 item 4)
    "train-gpu-memory-no-unit": train("--estimate-memory", gpu_memory="24", expect="--gpu-memory '24': give a size with a unit"),
    "train-gpu-memory-garbage": train("--estimate-memory", gpu_memory="lots", expect="give a size with a unit"),
    "train-gpu-memory-unknown-unit": train("--estimate-memory", gpu_memory="24GiBs", expect="give a size with a unit"),
    "train-gpu-memory-too-small": train("--estimate-memory", gpu_memory="0GiB", expect="at least 1MiB"),
    "train-gpu-memory-without-estimate": train(gpu_memory="24GiB", expect="budget of --estimate-memory"),
    "train-estimate-memory-no-real-size": train("--estimate-memory", expect="declares no real-size model"),
    # --- --distributed (issue 16): DeepSpeed is not installed in the test environments
    "train-distributed-deepspeed-missing": train(distributed="deepspeed-zero2", expect="needs DeepSpeed, which is not installed"),
}
if importlib.util.find_spec("mslk") is None:  # int4's kernels (torchao needs them for int4)
    ROWS["train-base-precision-int4-without-its-kernel"] = Row(
        _command("train", {**TRAIN, "--model": "qwen-image"}, ("--base-precision", "int4"), {}),
        "--base-precision int4 cannot run on cpu", family="qwen-image",
    )


def _rows() -> list[object]:
    return [pytest.param(row, id=name) for name, row in ROWS.items()]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every file the rows name, built once."""
    from diffsynth_core.testing import build_tiny, make_image_dataset

    root = tmp_path_factory.mktemp("bad-inputs")
    tiny = root / "tiny"
    build_tiny(tiny)
    files = {"tiny": tiny, "data": make_image_dataset(root / "data", 2, 32)}
    files.update(_bad_config_files(root))
    files.update(_bad_model_files(root, tiny))
    files.update(_bad_data_files(root))
    files["lora"] = _toy_lora(root, tiny)
    files.update(_toy_caches(root, tiny))
    files["a_file"] = root / "a_file"
    files["a_file"].write_text("not a folder\n")
    files["empty"] = root / "empty"
    files["empty"].mkdir()
    files["read_only"] = _unwritable_folder(root)
    return files


def _bad_config_files(root: Path) -> dict[str, Path]:
    texts = {
        "latin1_toml": 'model = "toy"\n# caf\xe9 au lait\nlearning_rate = 0.001\n'.encode("latin-1"),
        "conflict_toml": b"learning-rate = 0.001\nlearning_rate = 0.01\n",
        "invalid_toml": b"learning_rate = = 1\n",
        "unknown_toml": b"learnin_rate = 0.001\n",
        "wrong_type_toml": b'learning_rate = "fast"\n',
        "split_toml": b"max_steps = 3\n[train]\nlearning_rate = 0.001\n",
        "peer_ds_toml": b'dataset_base_path = "data"\n',
        "peer_musubi_toml": b"network_dim = 16\n",
        "peer_kohya_toml": b"max_train_epochs = 4\n",
        "prompts_no_table_toml": b'prompt = "a cat"\n',
        "prompts_missing_image_toml": b'[[prompts]]\nprompt = "a cat"\ninit_image = "nosuch.png"\n',
    }
    paths = {}
    for name, data in texts.items():
        paths[name] = root / f"{name}.toml"
        paths[name].write_bytes(data)
    paths["bad_yaml"] = root / "bad.yaml"
    paths["bad_yaml"].write_text("config: [unclosed\n")
    return paths


def _bad_model_files(root: Path, tiny: Path) -> dict[str, Path]:
    import json
    import shutil

    weights = tiny / "transformer" / "diffusion_pytorch_model.safetensors"
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(weights.read_bytes()[:600])  # the header promises more than is there
    broken = root / "tiny-truncated"
    shutil.copytree(tiny, broken)
    cut = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    cut.write_bytes(cut.read_bytes()[:-64])
    # another family's repository: the same layout, other classes (as a Qwen-Image download)
    other = root / "other-family"
    shutil.copytree(tiny, other)
    for component, cls in (("transformer", "QwenImageTransformer2DModel"), ("vae", "AutoencoderKLQwenImage")):
        config = other / component / "config.json"
        config.write_text(json.dumps({"_class_name": cls, **json.loads(config.read_text())}))
    return {"truncated": truncated, "tiny_truncated": broken, "other_family": other}


def _bad_data_files(root: Path) -> dict[str, Path]:
    from diffsynth_core.testing import make_image_dataset

    no_prompt = make_image_dataset(root / "no-prompt", 2, 32, prompt_column="caption")
    corrupt = make_image_dataset(root / "corrupt-data", 2, 32)
    for image in corrupt.glob("*.png"):
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    corrupt_png = root / "corrupt.png"
    corrupt_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    latin1_csv = root / "latin1.csv"
    latin1_csv.write_bytes("image,prompt\nimage_0.png,caf\xe9\n".encode("latin-1"))
    latin1_txt = root / "latin1.txt"
    latin1_txt.write_bytes("un caf\xe9\n".encode("latin-1"))
    return {
        "no_prompt_data": no_prompt, "corrupt_data": corrupt, "corrupt_png": corrupt_png,
        "latin1_csv": latin1_csv, "latin1_txt": latin1_txt,
    }  # fmt: skip


def _toy_lora(root: Path, tiny: Path) -> Path:
    """A real LoRA file of the toy (one training step), for the rows that merge one."""
    result = _invoke(
        "toy",
        ("train", "--model", "toy", "--model-path", str(tiny), "--dataset", str(root / "data"),
         "--output", str(root / "lora-run"), "--max-steps", "1", "--height", "32", "--width", "32"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root / "lora-run" / "final.safetensors"


def _toy_caches(root: Path, tiny: Path) -> dict[str, Path]:
    """A split-training cache of the 2-row dataset, the same data with a third row, and the
    cache as another family's would read (its index names qwen-image)."""
    import json
    import shutil

    from diffsynth_core.testing import make_image_dataset

    cache = root / "toy-cache"
    result = _invoke(
        "toy",
        ("cache", "--model", "toy", "--model-path", str(tiny), "--dataset", str(root / "data"),
         "--height", "32", "--width", "32", "--output", str(cache), "--no-progress"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    other = root / "qwen-image-cache"
    shutil.copytree(cache, other)
    index = json.loads((other / "index.json").read_text())
    index["fingerprint"]["family"] = "qwen-image"
    (other / "index.json").write_text(json.dumps(index))
    data3 = make_image_dataset(root / "data3", 3, 32)  # rows 0 and 1 are the 2-row dataset's
    return {"toy_cache": cache, "other_family_cache": other, "data3": data3}


def _unwritable_folder(root: Path) -> Path:
    """A folder this process cannot create files in. chmod does not stop root, whom sysfs
    refuses (EPERM); elsewhere the row is skipped."""
    if os.geteuid() != 0:
        folder = root / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/diffsynth-test-read_only")
    try:
        folder.mkdir()
    except OSError:
        return folder
    folder.rmdir()
    pytest.skip("no folder is unwritable for root here")


def _manager(family: str) -> object:
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager
    from diffsynth_core.testing import use_toy_plugin

    if family == "toy":
        return use_toy_plugin()
    manager = build_plugin_manager()
    if family not in manager.families:
        pytest.skip(f"the {family} plugin is not installed")
    reset_plugin_manager(manager)  # the commands look families up in the process-wide one
    return manager


def _invoke(family: str, args: tuple[str, ...], env: dict[str, str] | None = None) -> object:
    manager = _manager(family)
    return CliRunner().invoke(build_cli(manager), list(args), env={"DIFFSYNTH_DEBUG": "", **(env or {})})


def _args(row: Row, inputs: dict[str, Path], out: Path) -> tuple[list[str], dict[str, str]]:
    """The row's arguments and environment with the placeholders filled in."""
    names = {**{k: str(v) for k, v in inputs.items()}, "out": str(out)}
    env = {key: value.format(**names) for key, value in row.env.items()}
    return [part.format(**names) for part in row.args], env


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    yield
    from accelerate.state import AcceleratorState, GradientState

    from diffsynth_core.plugins import reset_plugin_manager

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    reset_plugin_manager(None)


def _check(row: Row, status: int, stderr: str, stdout: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr + stdout, stderr
    assert status == 1 and len(errors) == 1, f"status {status}, stderr:\n{stderr}"
    assert row.expect.lower() in errors[0].lower(), errors[0]


@pytest.mark.parametrize("row", _rows())
def test_bad_input_is_one_error_line(row: Row, inputs: dict[str, Path], tmp_path: Path) -> None:
    args, env = _args(row, inputs, tmp_path)
    result = _invoke(row.family, tuple(args), env)
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception
    _check(row, result.exit_code, result.stderr, result.stdout)


# A sample of the rows as a real process: what reaches the terminal, nothing in between.
IN_A_PROCESS = (
    "toml-not-utf8", "generate-model-path-other-family", "train-lora-target-modules-nosuch",
    "generate-output-read-only", "train-output-under-a-file",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_real_process(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    row = ROWS[name]
    args, row_env = _args(row, inputs, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSYNTH_")}
    env["DIFFSYNTH_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, str(TOY_CLI), *args],
        capture_output=True, text=True, env={**env, **row_env}, timeout=300,
    )  # fmt: skip
    _check(row, done.returncode, done.stderr, done.stdout)

