"""Speed settings (diffsynth_core/training/speed.py): each parses and reaches the model, and a
compiled model trains as the eager one does (tiny Qwen-Image, CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_core.errors import ConfigError
from diffsynth_core.training.optim import build_optimizer
from diffsynth_core.training.speed import set_attention


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    qwen = pytest.importorskip("diffsynth_qwen_image.tiny")
    return qwen.build_tiny(tmp_path_factory.mktemp("qwen-tiny"))


def _built(tiny: Path, tmp_path: Path, **flags: Any) -> Any:
    """The training module ``diffsynth train`` builds with ``flags`` (nothing trained)."""
    from diffsynth_core.cli.run.build import build_module, make_accelerator, prepare
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager
    from diffsynth_core.testing import make_image_dataset

    reset_plugin_manager(build_plugin_manager())
    data = make_image_dataset(tmp_path / "data", 1, 32)
    cli = {"model": "qwen-image", "model_path": str(tiny), "dataset": str(data), "output": str(tmp_path / "run"), **flags}
    run = prepare(cli, None, [])
    module, _ = build_module(run, make_accelerator(run.config))
    return module


def test_the_settings_reach_the_model(tiny: Path, tmp_path: Path) -> None:
    module = _built(tiny, tmp_path, compile=True, attention="math", tf32=False, gradient_checkpointing=False)
    dit = module.pipe.dit
    assert all(block._compiled_call_impl is not None for block in dit.transformer_blocks)
    assert dit.proj_out._compiled_call_impl is None  # regional: only the repeated blocks
    backends = {m.processor._attention_backend for m in dit.modules() if hasattr(m, "processor")}
    assert backends == {"_native_math"}
    assert module.extra_inputs["use_gradient_checkpointing"] is False
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_the_defaults_leave_the_model_eager(tiny: Path, tmp_path: Path) -> None:
    module = _built(tiny, tmp_path)
    dit = module.pipe.dit
    assert all(block._compiled_call_impl is None for block in dit.transformer_blocks)
    assert {m.processor._attention_backend for m in dit.modules() if hasattr(m, "processor")} == {None}
    assert module.extra_inputs["use_gradient_checkpointing"] is True  # the family's default
    assert torch.backends.cuda.matmul.allow_tf32 is True


def test_attention_errors_are_one_line(tiny: Path) -> None:
    from diffsynth_core.pipeline import load_pipeline

    with pytest.raises(ConfigError, match="--attention flash needs a CUDA GPU"):
        set_attention(load_pipeline("qwen-image", model_path=str(tiny)).dit, "flash", "cpu")
    with pytest.raises(ConfigError, match="has no diffusers attention dispatcher"):
        set_attention(torch.nn.Linear(2, 2), "math", "cpu")
    try:
        import xformers  # noqa: F401

        pytest.skip("xformers is installed here")
    except ImportError:
        pass
    dit = load_pipeline("qwen-image", model_path=str(tiny)).dit
    with pytest.raises(ConfigError, match=r"--attention xformers is not available on this machine \("):
        set_attention(dit, "xformers", "cuda")  # the kernel's package is missing


def test_adam_is_fused_where_its_kernel_can_skip_a_bad_step() -> None:
    params = [torch.nn.Parameter(torch.ones(2))]
    assert build_optimizer(params, "AdamW").defaults["fused"] is True  # CPU (and CUDA)
    assert build_optimizer(params, "Adam").defaults["fused"] is True
    assert build_optimizer(params, "AdamW", sharded=True).defaults["fused"] is None  # gloo FSDP
    assert "fused" not in build_optimizer(params, "SGD").defaults or not build_optimizer(
        params, "SGD"
    ).defaults.get("fused")


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(tiny: Path) -> None:
    """Regional compilation changes the kernels, not the maths: the same losses within fp32
    rounding. The test compiles through dynamo and AOT autograd (the graphs of forward and
    backward, what --compile captures) without inductor's C++ code generation, which costs
    minutes of CPU here; with inductor the same three losses came out equal to the last bit
    (docs/performance.md)."""
    from PIL import Image

    from diffsynth_core.pipeline import load_pipeline
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode
    from diffsynth_core.training.speed import compile_blocks

    def losses(compiled: bool) -> list[float]:
        torch.manual_seed(0)
        pipe = load_pipeline("qwen-image", model_path=str(tiny))
        switch_pipe_to_training_mode(pipe, lora_base_model="dit", lora_target_modules="to_q,to_k,to_v", lora_rank=4)
        if compiled:
            compile_blocks(list(pipe.dit.transformer_blocks), backend="aot_eager")
        module = PipelineTrainingModule(pipe, get_plugin_manager().get_loss("sft"), {"use_gradient_checkpointing": False})
        optimizer = torch.optim.AdamW(module.trainable_modules(), lr=1e-2)
        data = {"image": Image.new("RGB", (32, 32), (200, 30, 30)), "prompt": "a red picture"}
        out = []
        for _ in range(3):
            loss = module(data)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            out.append(loss.item())
        return out

    eager, compiled = losses(False), losses(True)
    print(f"eager {eager}\ncompiled {compiled}")
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)
    assert eager[0] != eager[2]  # training moved the weights: the comparison covers updates
