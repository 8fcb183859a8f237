"""FSDP2 through accelerate on two CPU processes (gloo): the same numbers as one process, a
killed run resumed to the unbroken end, checkpoints that load where users load them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .launching import env, launch_command, run

HERE = Path(__file__).parent
TOY_CLI = HERE.parent / "training" / "toy_cli.py"
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two checkpoints with the same keys."""
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("what", ["lora", "full"])
def test_fsdp_run_equals_the_one_process_run(
    what: str, tiny_toy: Path, image_folder: Path, tmp_path: Path
) -> None:
    script = [str(HERE / "sharded_train.py"), "fsdp", str(tiny_toy), str(image_folder)]
    extra = ["full"] if what == "full" else []
    one, two = tmp_path / "one", tmp_path / "two"
    # one process: 2 accumulated batches per step; two processes: one batch each (same samples)
    run([sys.executable, *script, str(one), *extra], DIFFSYNTH_LOAD_PLUGINS="")
    run(launch_command(2, *script, str(two), *extra), DIFFSYNTH_LOAD_PLUGINS="")

    losses_one = json.loads((one / "losses.json").read_text())
    losses_two = json.loads((two / "losses.json").read_text())
    assert len(losses_one) == len(losses_two) == 8  # 8 samples / 2 per step x 2 epochs
    assert max(abs(a - b) for a, b in zip(losses_one, losses_two, strict=True)) < 1e-6
    final_one, final_two = load_file(str(one / "final.safetensors")), load_file(str(two / "final.safetensors"))
    assert _difference(final_one, final_two) < 1e-6
    start = load_file(str(tiny_toy / "transformer" / "diffusion_pytorch_model.safetensors"))
    if what == "full":  # the gathered file is the whole DiT, trained
        assert final_two.keys() == start.keys()
        assert any(not torch.equal(final_two[k], start[k]) for k in start)
    sharded = json.loads((two / "sharding.json").read_text())
    assert sharded["units"] == ["FSDPPipelineTrainingModule", "FSDPToyBlock"]  # the declared blocks
    assert sharded["dtensors"] == sharded["trainable"] > 0
    assert sharded["local_numel"] < sharded["numel"]  # rank 0 holds a part only
    state = two / "state" / "step-000008" / "accelerate"  # every rank wrote its shards
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (state / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def _cli(run_dir: Path, tiny: Path, data: Path, *more: str) -> list[str]:
    return launch_command(
        2, str(TOY_CLI), "train", "--model", "toy", "--model-path", str(tiny), "--dataset", str(data),
        "--output", str(run_dir), "--distributed", "fsdp", "--max-steps", "6", "--save-every-n-steps", "2",
        "--height", "32", "--width", "32", "--repeat", "3", "--seed", "4", "--learning-rate", "1e-2", *more,
    )  # fmt: skip


def test_killed_fsdp_run_resumes_to_the_unbroken_end(
    tiny_toy: Path, image_folder: Path, tmp_path: Path
) -> None:
    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    process = subprocess.Popen(
        _cli(killed, tiny_toy, image_folder), env=env(DIFFSYNTH_LOAD_PLUGINS="", TOY_STEP_DELAY="0.6"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (killed / "state" / "step-000002" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no state at step 2"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # launcher and both ranks, mid-run
    process.wait(timeout=60)
    assert not (killed / "final.safetensors").exists()

    run(_cli(killed, tiny_toy, image_folder, "--resume", "latest"), DIFFSYNTH_LOAD_PLUGINS="")
    run(_cli(unbroken, tiny_toy, image_folder), DIFFSYNTH_LOAD_PLUGINS="")
    expected, got = load_file(str(unbroken / "final.safetensors")), load_file(str(killed / "final.safetensors"))
    assert _difference(expected, got) == 0.0
    assert [p.name for p in (killed / "state").iterdir()] == ["step-000006"]
    rows = (killed / "logs" / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("6,")


def test_full_training_checkpoint_loads_with_from_pretrained(controlnet_tiny: Path, tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    data = HERE.parents[1] / "examples" / "qwen_image" / "data"
    out = tmp_path / "run"
    run(launch_command(
        2, "-m", "diffsynth_core.cli.main", "train", "--model", "qwen-image", "--model-path", str(controlnet_tiny),
        "--dataset", str(data), "--output", str(out), "--max-steps", "2", "--height", "32", "--width", "32",
        "--distributed", "fsdp", "--trainable-models", "dit", "--learning-rate", "1e-3",
    ))  # fmt: skip
    final = load_file(str(out / "final.safetensors"))
    folder = tmp_path / "transformer"  # the diffusers component folder: its config + the file
    folder.mkdir()
    (folder / "config.json").write_bytes((controlnet_tiny / "transformer" / "config.json").read_bytes())
    (out / "final.safetensors").rename(folder / "diffusion_pytorch_model.safetensors")
    model, info = diffusers.QwenImageTransformer2DModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched key
    state = model.state_dict()
    assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in final)
    start = load_file(str(controlnet_tiny / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(final[k], start[k]) for k in start)  # trained, not the base


def test_controlnet_lora_under_fsdp_keeps_fp32_lora_weights_in_bf16(controlnet_tiny: Path, tmp_path: Path) -> None:
    data = HERE.parents[1] / "examples" / "qwen_image_controlnet" / "data"
    out = tmp_path / "run"
    run(launch_command(
        2, "-m", "diffsynth_core.cli.main", "train", "--model", "qwen-image-controlnet", "--model-path",
        str(controlnet_tiny), "--dataset", str(data), "--output", str(out), "--max-steps", "2", "--height", "32",
        "--width", "32", "--distributed", "fsdp", "--lora-base-model", "controlnet", "--lora-rank", "4",
        "--mixed-precision", "bf16", "--learning-rate", "1e-3",
    ))  # fmt: skip
    final = load_file(str(out / "final.safetensors"))
    assert final and all(k.startswith("controlnet.") and ".lora_" in k for k in final)
    assert {v.dtype for v in final.values()} == {torch.float32}  # trained in fp32 under bf16
    assert any(float(v.abs().max()) > 0 for k, v in final.items() if "lora_B" in k)  # it trained
