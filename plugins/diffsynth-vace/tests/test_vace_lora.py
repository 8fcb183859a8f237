"""Our LoRA files have the same effect in diffusers' WanVACEPipeline as in our pipeline.

A LoRA is injected (rank 4, random A and B so that it does something), exported by the core's
``ModelLogger`` in the ``diffusers`` format (``transformer.`` prefix), then
* merged with the core's ``merge_lora`` into a fresh pipeline of ours, and
* loaded with diffusers' ``WanVACEPipeline.load_lora_weights``;
both must change the output, and by the same amount as the LoRA layers did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_vace.family import LORA_TARGETS

KWARGS = {
    "prompt": "a red ball bounces",
    "num_frames": 9,
    "height": 64,
    "width": 64,
    "num_inference_steps": 2,
}


def ours_latents(pipe: Any) -> torch.Tensor:
    return pipe(**KWARGS, cfg_scale=5.0, seed=11, progress=False, output_type="latent")


def diffusers_latents(pipe: Any) -> torch.Tensor:
    return pipe(
        **KWARGS,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(11),
        output_type="latent",
    ).frames


def inject_random_lora(pipe: Any, base: str) -> torch.Tensor:
    """A rank-4 LoRA on ``pipe.<base>`` with random A and B; returns the output with it."""
    from diffsynth_core.training.module import switch_pipe_to_training_mode

    switch_pipe_to_training_mode(
        pipe, lora_base_model=base, lora_target_modules=LORA_TARGETS, lora_rank=4
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in pipe.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return ours_latents(pipe)


def export(pipe: Any, folder: Path, fmt: str = "diffusers") -> Path:
    """The LoRA file ``ModelLogger`` writes at the end of training, in format ``fmt``."""
    from diffsynth_core.training.logger import ModelLogger
    from diffsynth_core.training.module import PipelineTrainingModule

    module = PipelineTrainingModule(pipe, lambda *a, **k: None)
    logger = ModelLogger(folder, "pipe.dit.", export_format=fmt, family=pipe.family)
    return logger.write(module, module.state_dict(), "final", 1, 0)


@pytest.mark.parametrize("base", ["dit", "vace"])
def test_lora_same_effect_in_diffusers(
    pipe: Any, tiny_dir: Path, tmp_path: Path, base: str
) -> None:
    from diffusers import WanVACEPipeline
    from safetensors.torch import load_file

    from diffsynth_core.pipeline import load_pipeline

    with_layers = inject_random_lora(pipe, base)
    path = export(pipe, tmp_path)
    keys = list(load_file(path))
    expected_prefix = "transformer.vace_blocks." if base == "vace" else "transformer."
    assert keys and all(k.startswith(expected_prefix) for k in keys)
    assert any(".blocks.0.attn1.to_q." in k for k in keys) == (base == "dit")

    fresh = load_pipeline("wan-vace", model_path=str(tiny_dir))
    plain = ours_latents(fresh)
    assert fresh.load_lora(str(path)) == len(keys) // 2  # core read_lora_file + merge_lora
    merged = ours_latents(fresh)

    theirs = WanVACEPipeline.from_pretrained(tiny_dir)
    theirs.set_progress_bar_config(disable=True)
    theirs_plain = diffusers_latents(theirs)
    theirs.load_lora_weights(str(path))
    theirs_lora = diffusers_latents(theirs)

    effect = (merged - plain).abs().max().item()
    print(
        f"LoRA on {base}: effect {effect:.3g}, ours vs diffusers {(merged - theirs_lora).abs().max():.3g}"
    )
    assert torch.equal(plain, theirs_plain)
    assert effect > 1e-2  # the LoRA does something ...
    assert torch.allclose(merged, theirs_lora, atol=5e-5)  # ... the same thing in diffusers
    assert torch.allclose(merged, with_layers, atol=5e-5)  # ... as the LoRA layers in training


def test_vace_lora_touches_only_vace_blocks(pipe: Any) -> None:
    from diffsynth_core.training.module import switch_pipe_to_training_mode

    switch_pipe_to_training_mode(
        pipe, lora_base_model="vace", lora_target_modules=LORA_TARGETS, lora_rank=4
    )
    trainable = [n for n, p in pipe.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 2 * 10  # 2 VACE blocks x 10 projections x (A, B)
    assert all(n.startswith("dit.vace_blocks.") and "lora_" in n for n in trainable)
    # a view, not a copy: the VACE model's weights are the DiT's own
    assert pipe.vace.vace_blocks[0] is pipe.dit.vace_blocks[0]
    assert sum(1 for _ in pipe.parameters()) == len(dict(pipe.named_parameters()))


def test_wan_format_names_are_the_original_ones(tiny_dir: Path) -> None:
    """``--lora-format wan`` undoes diffusers' renaming of every key, VACE blocks included."""
    from diffusers import WanVACETransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from diffsynth_vace.formats import to_wan_names

    state = WanVACETransformer3DModel.from_pretrained(tiny_dir / "transformer").state_dict()
    original = to_wan_names(state)
    assert {
        "blocks.0.self_attn.q.weight",
        "blocks.0.cross_attn.o.weight",
        "blocks.0.ffn.0.weight",
    } <= set(original)
    assert {
        "vace_blocks.0.before_proj.weight",
        "vace_blocks.1.after_proj.weight",
        "head.head.weight",
    } <= set(original)
    back = convert_wan_transformer_to_diffusers(dict(original))
    assert back.keys() == state.keys() and all(back[k] is state[k] for k in state)


def test_wan_format_lora_loads_in_diffusers(pipe: Any, tiny_dir: Path, tmp_path: Path) -> None:
    """diffusers reads the original names (its Wan converter knows the main blocks, not the
    VACE ones): the main-block part of a ``wan`` LoRA acts as the ``diffusers`` one does."""
    from diffusers import WanVACEPipeline
    from safetensors.torch import load_file, save_file

    inject_random_lora(pipe, "dit")
    wan_path, diffusers_path = (
        export(pipe, tmp_path / "wan", "wan"),
        export(pipe, tmp_path / "diffusers"),
    )
    outputs = []
    for path in (wan_path, diffusers_path):
        main = {k: v for k, v in load_file(path).items() if "vace_blocks" not in k}
        save_file(main, tmp_path / f"main-{path.parent.name}.safetensors")
        theirs = WanVACEPipeline.from_pretrained(tiny_dir)
        theirs.set_progress_bar_config(disable=True)
        if not outputs:
            outputs.append(diffusers_latents(theirs))  # without LoRA
        theirs.load_lora_weights(str(tmp_path / f"main-{path.parent.name}.safetensors"))
        outputs.append(diffusers_latents(theirs))
    plain, wan, diffusers_format = outputs
    assert all(
        k.startswith("diffusion_model.blocks.")
        for k in load_file(tmp_path / "main-wan.safetensors")
    )
    assert (wan - plain).abs().max() > 1e-2
    assert torch.allclose(wan, diffusers_format, atol=1e-6)


@pytest.mark.parametrize("base", ["dit", "vace"])
def test_wan_format_lora_reads_back_into_diffsynth(
    pipe: Any, tiny_dir: Path, tmp_path: Path, base: str
) -> None:
    """``--lora-format wan`` files come back through ``generate --lora`` / ``--lora-checkpoint``
    (the ``diffsynth_import_lora`` hook), VACE blocks included, with the same effect."""
    from safetensors.torch import load_file

    from diffsynth_core.pipeline import load_pipeline

    with_layers = inject_random_lora(pipe, base)
    path = export(pipe, tmp_path, "wan")
    keys = list(load_file(path))
    assert any(".self_attn.q." in k or ".before_proj." in k or ".ffn.0." in k for k in keys)
    fresh = load_pipeline("wan-vace", model_path=str(tiny_dir))
    assert fresh.load_lora(str(path)) == len(keys) // 2
    assert torch.allclose(ours_latents(fresh), with_layers, atol=5e-5)
