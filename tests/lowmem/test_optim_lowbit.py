"""torchao's low-bit AdamW through ``--optimizer``, its state through a resume, the offload
switch, and ``--lora-dtype`` / ``--save-dtype`` reaching the weights and the files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.optim import build_optimizer

from .conftest import run_train

# rank 128 on 32-wide layers: lora_A holds 128 x 32 = 4096 values, the least torchao's low-bit
# optimizers store quantized (smaller tensors keep fp32 moments)
LOWBIT = {"lora_rank": 128, "lora_target_modules": "to_q,to_v"}
STATE = {"adamw8bit": "OptimState8bit", "adamw4bit": "OptimState4bit", "adamwfp8": "OptimStateFp8"}
# mean |weights - torch AdamW's| after 3 steps, as a fraction of the mean step: measured 0.006
# (8-bit), 0.23 (4-bit), 0.009 (fp8)
CLOSE = {"adamw8bit": 0.03, "adamw4bit": 0.4, "adamwfp8": 0.03}


@pytest.fixture(autouse=True)
def eager_optimizer_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchao compiles its optimizer step (torch.compile, once per parameter shape): about a
    minute per shape on this CPU. The tests run the same step function eagerly."""
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kwargs: fn)


@pytest.fixture
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from diffsynth_core.testing import build_tiny, make_image_dataset, use_toy_plugin

    root = tmp_path_factory.mktemp("toy")
    build_tiny(root / "tiny")
    use_toy_plugin()
    yield {"model": "toy", "model_path": str(root / "tiny"),
           "dataset": str(make_image_dataset(root / "data", 4, 32))}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STATE))
def test_each_lowbit_adamw_steps_on_cpu_with_quantized_moments(name: str) -> None:
    weight = torch.nn.Parameter(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    optimizer = build_optimizer([weight], name, learning_rate=1e-2)
    start = weight.detach().clone()
    reference = torch.nn.Parameter(start.clone())
    adamw = torch.optim.AdamW([reference], lr=1e-2)
    for _ in range(3):
        for param, optim in ((weight, optimizer), (reference, adamw)):
            param.pow(2).sum().backward()
            optim.step()
            optim.zero_grad()
    state = optimizer.state[weight]
    assert type(state["exp_avg"]).__name__ == STATE[name] == type(state["exp_avg_sq"]).__name__
    moved, off = (weight - start).abs().mean(), (weight - reference).abs().mean()
    assert moved > 1e-2 and off < CLOSE[name] * moved  # AdamW's steps, up to the rounding


def test_optimizer_offload_without_a_gpu_is_a_config_error() -> None:
    weight = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ConfigError, match="--optimizer-offload .* CUDA"):
        build_optimizer([weight], "AdamW", offload=True)


def _trainable(output: Path) -> dict[str, torch.Tensor]:
    (state,) = sorted((output / "state").iterdir())
    return load_file(str(state / "trainable.safetensors"))


def test_an_8bit_adamw_run_resumes_exactly(toy: dict[str, str], tmp_path: Path) -> None:
    settings = {**toy, **LOWBIT, "optimizer": "adamw8bit"}
    unbroken = run_train(**settings, output=str(tmp_path / "unbroken"), max_steps=6, num_epochs=2)
    run_train(**settings, output=str(tmp_path / "run"), max_steps=3)
    saved = torch.load(
        tmp_path / "run" / "state" / "step-000003" / "optimizer.pt", weights_only=False
    )
    assert {type(s["exp_avg"]).__name__ for s in saved["state"].values()} == {"OptimState8bit"}
    resumed = run_train(**settings, output=str(tmp_path / "run"), max_steps=6, resume="latest")
    expected, got = _trainable(unbroken), _trainable(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    first = run_train(**settings, output=str(tmp_path / "three"), max_steps=3)
    assert not all(torch.equal(expected[k], _trainable(first)[k]) for k in expected)


def test_the_8bit_state_round_trips_through_accelerates_save_and_load_state(tmp_path: Path) -> None:
    from accelerate import Accelerator

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
        x = torch.randn(8, 64, generator=torch.Generator().manual_seed(seed))
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    model, optimizer = accelerator.prepare(
        model, build_optimizer(model.parameters(), "adamw8bit", 1e-2)
    )
    step(model, optimizer, 1)
    accelerator.save_state(str(tmp_path / "state"))
    step(model, optimizer, 2)
    after_two = model.weight.detach().clone()
    accelerator.load_state(str(tmp_path / "state"))  # weights and 8-bit moments of step 1
    assert type(optimizer.optimizer.state[model.weight]["exp_avg"]).__name__ == "OptimState8bit"
    step(model, optimizer, 2)
    assert torch.equal(model.weight.detach(), after_two)


@pytest.mark.parametrize(
    ("lora_dtype", "save_dtype", "trained", "saved"),
    [("bf16", None, torch.bfloat16, torch.bfloat16), ("fp32", "fp16", torch.float32, torch.float16),
     ("fp32", "bf16", torch.float32, torch.bfloat16)],
)  # fmt: skip
def test_lora_dtype_reaches_the_weights_and_save_dtype_the_file(
    toy: dict[str, str], tmp_path: Path, lora_dtype: str, save_dtype: str | None,
    trained: torch.dtype, saved: torch.dtype,
) -> None:  # fmt: skip
    output = run_train(**toy, output=str(tmp_path / "run"), max_steps=2, lora_dtype=lora_dtype,
                       save_dtype=save_dtype)  # fmt: skip
    state = _trainable(output)  # the resume state keeps the trained dtype
    assert state and {v.dtype for v in state.values()} == {trained}
    final = load_file(str(output / "final.safetensors"))
    assert final and {v.dtype for v in final.values()} == {saved}
    b_keys = [k for k in final if ".lora_B." in k]
    assert any(final[k].abs().max() > 0 for k in b_keys)  # it trained
    for key in b_keys:  # the file is the trained weights, only rounded
        bare = next(
            s
            for s in state
            if s.endswith(key.split(".", 1)[1].replace(".weight", ".default.weight"))
        )
        assert torch.allclose(final[key].float(), state[bare].float(), rtol=1e-2, atol=1e-4)


def test_the_seeds_optimizer_offload_argument_is_the_offload_switch(
    toy: dict[str, str], tmp_path: Path
) -> None:
    from accelerate import Accelerator

    from diffsynth_core.data import UnifiedDataset
    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_core.training.runner import launch_training_task

    pipe = load_pipeline("toy", model_path=toy["model_path"])
    switch_pipe_to_training_mode(
        pipe, lora_base_model="dit", lora_target_modules="to_q", lora_rank=4
    )
    module = PipelineTrainingModule(pipe, get_plugin_manager().get_loss("sft"))
    data = Path(toy["dataset"])
    operator = UnifiedDataset.default_image_operator(data, height=32, width=32)
    dataset = UnifiedDataset(data, data / "metadata.csv", main_data_operator=operator)
    logger = ModelLogger(tmp_path / "run", remove_prefix_in_ckpt="pipe.dit.")
    with pytest.raises(
        ConfigError, match="--optimizer-offload moves the optimizer state off a CUDA"
    ):
        launch_training_task(
            Accelerator(cpu=True), dataset, module, logger, enable_optimizer_cpu_offload=True,
            progress=False,
        )  # fmt: skip
    assert not (tmp_path / "run" / "training_args.json").exists()
