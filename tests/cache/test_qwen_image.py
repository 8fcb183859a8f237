"""Split training of Qwen-Image (tiny preset, CPU, fp32): cache once, train without encoders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import (
    EXAMPLES,
    NeverBuilt,
    copy_rows,
    invoke,
    lora,
    losses,
    ok,
    same_cache,
    same_weights,
)

pytestmark = pytest.mark.slow
SIZE = ("--height", "32", "--width", "32")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict[str, Path]:
    """3 rows of the bundled data and their cache, built by one process."""
    root = tmp_path_factory.mktemp("qwen-split")
    data = copy_rows(EXAMPLES / "qwen_image" / "data", root / "data", 3)
    cache = root / "cache"
    ok(
        invoke(
            "cache",
            "--model",
            "qwen-image",
            "--preset",
            "tiny",
            "--dataset",
            data,
            *SIZE,
            "--output",
            cache,
            "--no-progress",
        )
    )
    return {"root": root, "data": data, "cache": cache}


def common(data: Path) -> list[object]:
    return ["--model", "qwen-image", "--preset", "tiny", "--dataset", data, *SIZE]


def test_training_from_the_cache_equals_training_without_it_and_never_builds_the_encoders(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import AutoencoderKLQwenImage
    from transformers import Qwen2_5_VLForConditionalGeneration

    root, data, cache = setup["root"], setup["data"], setup["cache"]
    steps = ("--max-steps", "4", "--learning-rate", "1e-2")
    ok(invoke("train", *common(data), *steps, "--output", root / "plain"))
    guard = NeverBuilt(monkeypatch, Qwen2_5_VLForConditionalGeneration, AutoencoderKLQwenImage)
    ok(invoke("train", *common(data), *steps, "--cache", cache, "--output", root / "cached"))
    assert guard.built == []  # not merely unused: never constructed
    assert losses(root / "cached") == losses(root / "plain") and len(losses(root / "plain")) == 4
    assert same_weights(lora(root / "cached"), lora(root / "plain"))  # bitwise, fp32 on CPU


def test_the_cache_is_built_without_the_dit(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20B DiT need not fit beside the encoders: `diffsynth cache` never builds it, and the
    cache equals the one the fixture built (a cache that trains as no cache does)."""
    from diffusers import QwenImageTransformer2DModel

    guard = NeverBuilt(monkeypatch, QwenImageTransformer2DModel)
    ok(invoke("cache", *common(setup["data"]), "--output", tmp_path / "cache", "--no-progress"))
    assert guard.built == []
    assert same_cache(tmp_path / "cache", setup["cache"])


def test_a_cache_built_with_an_fp8_text_encoder_trains(setup: dict[str, Path], tmp_path: Path) -> None:
    """`diffsynth cache --base-precision fp8`: the text encoder stored in fp8 (Qwen2.5-VL-7B:
    8.3 GB instead of 16.6), the VAE as loaded; its embeddings are fp8's rounding of the full
    ones, the index records the precision, and training reads the cache as any other."""
    import torch

    from .conftest import contents

    fp8 = tmp_path / "cache-fp8"
    built = ok(invoke("cache", *common(setup["data"]), "--base-precision", "fp8", "--output", fp8, "--no-progress"))
    assert "base precision fp8: text_encoder:" in built.output and "vae" not in built.output.split("base precision")[1].split("\n")[0]
    (index, shards), (_, full) = contents(fp8), contents(setup["cache"])
    assert index["fingerprint"]["encoder_precision"] == "fp8"
    assert shards.keys() == full.keys()
    name = next(iter(shards))
    prompt = [k for k in shards[name][1] if "prompt_emb" in k and "mask" not in k]
    latent = [k for k in shards[name][1] if "input_latents" in k]
    assert prompt and latent
    for key in prompt:  # rounded by fp8 weights: close, not equal
        got, want = shards[name][1][key].float(), full[name][1][key].float()
        assert not torch.equal(got, want) and (got - want).norm() < 0.1 * want.norm()
    for key in latent:  # the VAE is not quantized
        assert torch.equal(shards[name][1][key], full[name][1][key])
    run = ok(invoke("train", *common(setup["data"]), "--max-steps", "2", "--cache", fp8, "--output", tmp_path / "run"))
    assert len(losses(tmp_path / "run")) == 2, run.output


def test_sample_images_load_the_dropped_models_only_while_sampling(setup: dict[str, Path]) -> None:
    root, data, cache = setup["root"], setup["data"], setup["cache"]
    (root / "prompts.txt").write_text("a red circle\n")
    out = root / "sampled"
    ok(invoke("train", *common(data), "--max-steps", "2", "--cache", cache, "--output", out,
              "--sample-prompts", root / "prompts.txt", "--sample-every", "2", "--sample-steps", "2"))  # fmt: skip
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step-000000-0.png",
        "step-000002-0.png",
    ]


def test_a_cache_built_by_two_processes_equals_one_built_by_one(
    setup: dict[str, Path], tiny_cache: Path
) -> None:
    root, data = setup["root"], setup["data"]
    two = root / "cache-2"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29531", "--module", "diffsynth_core.cli.main"]  # fmt: skip
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "DIFFSYNTH_CACHE": str(tiny_cache),
    }
    env.pop("DIFFSYNTH_DEBUG", None)
    args = ["cache", *map(str, common(data)), "--output", str(two), "--no-progress"]
    done = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 rows (2 encoded here" in done.stdout  # rank 0 encoded rows 0 and 2, rank 1 row 1
    assert same_cache(two, setup["cache"])


def test_a_killed_cache_run_resumes_and_ends_equal_to_an_unbroken_one(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffsynth_core.cache.folder import CacheFolder

    root, data = setup["root"], setup["data"]
    broken = root / "cache-killed"
    write, written = CacheFolder.write, []

    def killed_after_two(self: CacheFolder, *args: object, **kwargs: object) -> Path:
        if len(written) == 2:
            raise KeyboardInterrupt  # as Ctrl-C between two shards
        written.append(args[0])
        return write(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CacheFolder, "write", killed_after_two)
    result = invoke("cache", *common(data), "--output", broken, "--no-progress")
    assert result.exit_code == 130 and not (broken / "index.json").exists()
    monkeypatch.setattr(CacheFolder, "write", write)
    resumed = ok(invoke("cache", *common(data), "--output", broken, "--no-progress"))
    assert "3 rows (1 encoded here, 2 kept from before" in resumed.output
    assert same_cache(broken, setup["cache"])


def test_a_changed_caption_makes_the_cache_stale(setup: dict[str, Path]) -> None:
    root, data, cache = setup["root"], setup["data"], setup["cache"]
    metadata = data / "metadata.csv"
    metadata.write_text(metadata.read_text().replace("a yellow square", "a green square"))
    result = invoke(
        "train", *common(data), "--max-steps", "1", "--cache", cache, "--output", root / "stale"
    )
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert line.startswith(f"error: --cache {cache} is stale: row 1 (image_01.png): its caption")
    assert (
        "rebuild it with: diffsynth cache --model qwen-image" in line
        and f"--output {cache}" in line
    )
    assert not (root / "stale").exists()  # nothing of the run was written


def test_the_empty_caption_a_dropped_caption_trains_with_is_in_the_cache(
    setup: dict[str, Path],
) -> None:
    from diffsynth_core.cache.folder import CacheFolder, ShardStore
    from diffsynth_core.cache.keys import call_key
    from diffsynth_qwen_image.units import QwenImageUnit_PromptEmbedder

    folder = CacheFolder(setup["cache"])
    index = folder.read_index()
    store = ShardStore(folder, range(3), index["settings"])
    # the inputs the prompt unit sees in training (batch 1, the family's default
    # --max-sequence-length, cfg_scale 1), its caption dropped
    unit = QwenImageUnit_PromptEmbedder()
    shared = {"batch_size": 1, "max_sequence_length": 512, "cfg_scale": 1}
    entry = store.get(call_key(unit, shared, {"prompt": ""}, {}) or "", "cpu")
    assert entry is not None and entry[1]["prompt_emb"].shape[0] == 1
    assert len(folder.variants()) == 1  # one file for every row's empty caption
