"""Extension points other plugins use: DiT kwargs, units added through the hook, edit latents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_core import hookimpl
from diffsynth_core.pipeline import PipelineUnit
from diffsynth_core.plugins import PluginManager, reset_plugin_manager
from diffsynth_qwen_image import ModelConfig, QwenImagePipeline
from diffsynth_qwen_image.latents import pack_latents

GEN = dict(
    height=64,
    width=64,
    num_inference_steps=2,
    cfg_scale=1.0,
    seed=0,
    progress=False,
    output_type="latent",
)


def _inputs(pipe: QwenImagePipeline) -> dict[str, Any]:
    emb = pipe.units[-1].process(pipe, "a cat")
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    return {"latents": latents, "timestep": torch.tensor([700.0]), **emb}


def _residuals(scale: float) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [scale * torch.randn(1, 16, 64, generator=generator)]  # (B, tokens, inner_dim)


def _constant_residuals(scale: float) -> Any:
    def fn(*_: Any) -> dict[str, Any]:
        return {"controlnet_block_samples": _residuals(scale)}

    return fn


def test_dit_extra_kwargs_reach_the_dit(tiny_pipe: QwenImagePipeline) -> None:
    inputs = _inputs(tiny_pipe)
    seen: dict[str, Any] = {}

    def control(
        pipe: Any, tokens: torch.Tensor, sigma: torch.Tensor, context: dict[str, Any]
    ) -> dict[str, Any]:
        seen.update(pipe=pipe, tokens=tokens, sigma=sigma, context=context)
        return {"controlnet_block_samples": _residuals(0.5)}

    with torch.no_grad():
        plain = tiny_pipe.model_fn(**inputs)
        steered = tiny_pipe.model_fn(**inputs, dit_extra_kwargs_fns=[control])
        direct = tiny_pipe.dit(
            hidden_states=pack_latents(inputs["latents"]), timestep=torch.tensor([0.7]),
            encoder_hidden_states=inputs["prompt_emb"], encoder_hidden_states_mask=None,
            img_shapes=[[(1, 4, 4)]], controlnet_block_samples=_residuals(0.5), return_dict=False,
        )[0]  # fmt: skip
    assert seen["pipe"] is tiny_pipe and seen["tokens"].shape == (1, 16, 64)
    assert torch.allclose(seen["sigma"], torch.tensor([0.7]))
    assert (
        seen["context"]["img_shapes"] == [[(1, 4, 4)]]
        and seen["context"]["latents"] is inputs["latents"]
    )
    assert (steered - plain).abs().max() > 1e-2
    torch.testing.assert_close(pack_latents(steered), direct, rtol=0, atol=1e-6)


def test_residuals_of_several_functions_are_summed(tiny_pipe: QwenImagePipeline) -> None:
    inputs = _inputs(tiny_pipe)
    half, whole = _constant_residuals(0.25), _constant_residuals(0.5)
    with torch.no_grad():
        two = tiny_pipe.model_fn(**inputs, dit_extra_kwargs_fns=[half, half])
        one = tiny_pipe.model_fn(**inputs, dit_extra_kwargs_fns=[whole])
    torch.testing.assert_close(two, one, rtol=0, atol=1e-6)


def test_edit_latents_join_the_image_tokens(tiny_pipe: QwenImagePipeline) -> None:
    inputs = _inputs(tiny_pipe)
    edit = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(3))
    shapes: list[Any] = []

    def spy(pipe: Any, tokens: torch.Tensor, sigma: torch.Tensor, context: dict) -> dict:
        shapes.append((tokens.shape, context["img_shapes"]))
        return {}

    with torch.no_grad():
        plain = tiny_pipe.model_fn(**inputs)
        edited = tiny_pipe.model_fn(**inputs, edit_latents=[edit], dit_extra_kwargs_fns=[spy])
    assert edited.shape == plain.shape == (1, 16, 8, 8)
    assert shapes == [(torch.Size([1, 16 + 24, 64]), [[(1, 4, 4), (1, 4, 6)]])]
    assert (edited - plain).abs().max() > 1e-3  # the target tokens attend to the edit tokens


def test_edit_image_needs_an_edit_plugin(tiny_pipe: QwenImagePipeline) -> None:
    with pytest.raises(NotImplementedError, match="Qwen-Image-Edit"):
        tiny_pipe.units[-1].process(tiny_pipe, "a cat", edit_image=object())


class BrightenUnit(PipelineUnit):
    """What a ControlNet-like plugin does: add a DiT kwargs function from its own input."""

    def __init__(self) -> None:
        super().__init__(
            input_params=("brighten", "dit_extra_kwargs_fns"),
            output_params=("dit_extra_kwargs_fns",),
            insert_before="QwenImageUnit_PromptEmbedder",
        )

    def process(
        self, pipe: Any, brighten: float | None, dit_extra_kwargs_fns: list | None
    ) -> dict[str, Any]:
        if not brighten:
            return {}
        fn = _constant_residuals(brighten)
        return {"dit_extra_kwargs_fns": [*(dit_extra_kwargs_fns or []), fn]}


class BrightenPlugin:
    @hookimpl
    def diffsynth_pipeline_units(self, family: Any, pipe: Any) -> list[PipelineUnit] | None:
        return [BrightenUnit()] if family.name == "qwen-image" else None


@pytest.fixture()
def manager_with_brighten() -> Iterator[PluginManager]:
    manager = PluginManager()
    manager.load_builtins()
    manager.load_entry_points({"qwen-image"})
    manager.run_registration()
    manager.register_object(BrightenPlugin(), "brighten")
    reset_plugin_manager(manager)
    yield manager
    reset_plugin_manager(None)


def test_a_plugin_adds_a_unit_without_editing_this_one(
    tiny_dir: Path, manager_with_brighten: PluginManager
) -> None:
    pipe = QwenImagePipeline.from_pretrained(
        torch_dtype=torch.float32,
        device="cpu",
        model_configs=[
            ModelConfig(
                path=tiny_dir,
                origin_file_pattern="transformer/diffusion_pytorch_model*.safetensors",
            ),
            ModelConfig(path=tiny_dir, origin_file_pattern="text_encoder/model*.safetensors"),
            ModelConfig(
                path=tiny_dir, origin_file_pattern="vae/diffusion_pytorch_model.safetensors"
            ),
        ],
        tokenizer_config=ModelConfig(path=tiny_dir, origin_file_pattern="tokenizer/"),
    )
    names = [u.name for u in pipe.units]
    assert names.index("BrightenUnit") == names.index("QwenImageUnit_PromptEmbedder") - 1
    plain = pipe("a cat", **GEN)
    assert torch.equal(pipe("a cat", brighten=0.0, **GEN), plain)
    assert (pipe("a cat", brighten=0.5, **GEN) - plain).abs().max() > 1e-2
