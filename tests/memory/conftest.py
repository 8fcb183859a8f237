"""A small real-size spec for the estimate's tests: diffusers' Qwen-Image DiT with the real
head width (128) and 4 heads, 4 blocks, 256x256 images and 64 text tokens, and a tiny VAE.
Its fake traces are shared by every test in the folder (one Estimator per session)."""

from __future__ import annotations

from typing import Any

import pytest

from diffsynth_core.memory.spec import RealSize, Shape

TARGETS = "to_q,to_v,img_mlp.net.2,img_mod.1"  # a few: every LoRA layer is ops to trace
SHAPE = Shape(batch_size=1, height=256, width=256)


def build(units: int) -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        num_layers=units, num_attention_heads=4, attention_head_dim=128, joint_attention_dim=512
    )


def inputs(model: Any, shape: Shape, dtype: Any) -> dict[str, Any]:
    import torch

    rows, cols = shape.height // 16, shape.width // 16
    return {
        "hidden_states": torch.randn(shape.batch_size, rows * cols, 64, dtype=dtype),
        "encoder_hidden_states": torch.randn(shape.batch_size, 64, 512, dtype=dtype),
        "timestep": torch.ones(shape.batch_size, dtype=dtype),
        "img_shapes": [[(1, rows, cols)]] * shape.batch_size,
        "return_dict": False,
    }


def encode(shape: Shape, dtype: Any) -> tuple[Any, Any]:
    import torch
    from diffusers import AutoencoderKLQwenImage

    vae = AutoencoderKLQwenImage(base_dim=16, z_dim=16, num_res_blocks=1).requires_grad_(False)
    pixels = torch.randn(shape.batch_size, 3, 1, shape.height, shape.width, dtype=dtype)
    return vae, lambda: vae.encode(pixels)


SPEC = RealSize(
    build=build, inputs=inputs, units=4, frozen={"text_encoder": 50e6, "vae": 1e6},
    encode=encode, attention=lambda shape: (4, (shape.height // 16) * (shape.width // 16) + 64, 4),
    name="small Qwen-Image DiT",
)  # fmt: skip


@pytest.fixture(scope="session")
def estimator() -> Any:
    from diffsynth_core.memory.estimate import Estimator

    return Estimator(SPEC, ("transformer_blocks",))


@pytest.fixture
def lora() -> Any:
    from diffsynth_core.memory.estimate import MemorySettings

    return MemorySettings(SHAPE, lora_target_modules=TARGETS, lora_rank=16, cache=True)
