"""Training: a new ControlNet from the DiT, full ControlNet training, LoRA on either model,
and checkpoints that diffusers' ``QwenImageControlNetModel`` loads."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

PROMPT = "a red box on a plain background"
SIDE = 32  # training tests run at 32x32: the VAE dominates a tiny training step
LORA_TARGETS = "to_q,to_k,to_v,to_out.0"


def target_image() -> Image.Image:
    image = Image.new("RGB", (64, 64), (30, 60, 200))
    ImageDraw.Draw(image).rectangle((16, 12, 48, 44), fill=(220, 40, 40))
    return image.resize((SIDE, SIDE))


def train(
    pipe: Any,
    data: dict[str, Any],
    steps: int,
    lr: float = 1e-3,
    extra: dict[str, Any] | None = None,
    **mode: Any,
) -> Any:
    """``steps`` AdamW steps of the SFT loss on one sample; returns the training module.
    ``extra`` are inputs as ``diffsynth train`` adds them (family options ...)."""
    from diffsynth_core.training.losses import FlowMatchSFTLoss
    from diffsynth_core.training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    switch_pipe_to_training_mode(pipe, **mode)
    module = PipelineTrainingModule(
        pipe, FlowMatchSFTLoss, {"use_gradient_checkpointing": True, **(extra or {})}
    )
    optimizer = torch.optim.AdamW(module.trainable_modules(), lr=lr)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = module(data)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return module


def generate(pipe: Any, control: Image.Image | None, latents: torch.Tensor) -> torch.Tensor:
    from diffsynth_core.training.sampling import untouched_training_state

    with untouched_training_state(pipe):
        return pipe(PROMPT, control_image=control, latents=latents, height=SIDE, width=SIDE,
                    num_inference_steps=2, cfg_scale=1.0, progress=False, output_type="latent")  # fmt: skip


@pytest.fixture(scope="module")
def data(make_edge_image) -> dict[str, Any]:  # noqa: ANN001
    control = make_edge_image().resize((SIDE, SIDE))
    return {"image": target_image(), "prompt": PROMPT, "control_image": control}


@pytest.fixture(scope="module")
def initial_latents() -> torch.Tensor:
    """Packed initial noise of a SIDE x SIDE image."""
    return torch.randn(1, (SIDE // 16) ** 2, 64, generator=torch.Generator().manual_seed(11))


def test_new_controlnet_copies_the_dit_and_starts_neutral(
    load_pipe, control_a, initial_latents
) -> None:  # noqa: ANN001
    pipe = load_pipe(controlnet_layers=1)
    net, dit = pipe.controlnet, pipe.dit
    assert net.config.num_layers == 1
    assert torch.equal(
        net.transformer_blocks[0].attn.to_q.weight, dit.transformer_blocks[0].attn.to_q.weight
    )
    assert torch.count_nonzero(net.controlnet_x_embedder.weight) == 0
    assert torch.equal(
        generate(pipe, control_a, initial_latents), generate(pipe, None, initial_latents)
    )


def test_full_training_trains_only_the_controlnet(
    fresh_pipe, data, control_a, control_b, initial_latents
) -> None:  # noqa: ANN001
    pipe = fresh_pipe(controlnet_layers=2)
    dit_before = {k: v.clone() for k, v in pipe.dit.state_dict().items()}
    module = train(pipe, data, steps=4, trainable_models="controlnet")
    names = module.trainable_param_names()
    assert names and all(n.startswith("pipe.controlnet.") for n in names)
    assert all(torch.equal(v, dit_before[k]) for k, v in pipe.dit.state_dict().items())
    # the zero-initialised control embedding has learnt: the control image now matters
    assert torch.count_nonzero(pipe.controlnet.controlnet_x_embedder.weight) > 0
    a, b = generate(pipe, control_a, initial_latents), generate(pipe, control_b, initial_latents)
    assert (a - b).abs().max() > 0


def test_training_loss_falls_with_the_control_image(fresh_pipe, data) -> None:  # noqa: ANN001
    from diffsynth_core.training.losses import FlowMatchSFTLoss

    pipe = fresh_pipe(controlnet_layers=2)
    fixed = {**data}

    def loss() -> float:
        torch.manual_seed(5)  # same noise and timestep every time
        with torch.no_grad():
            shared, posi, nega = pipe.training_inputs(fixed)
            shared, posi, _ = pipe.run_units({"cfg_scale": 1, **shared}, posi, nega)
            return FlowMatchSFTLoss(pipe, **shared, **posi).item()

    from diffsynth_core.training.module import switch_pipe_to_training_mode

    switch_pipe_to_training_mode(pipe)
    before = loss()
    train(pipe, data, steps=6, lr=3e-3, trainable_models="controlnet")
    after = loss()
    print(f"loss on a fixed noise/timestep: {before:.4f} -> {after:.4f}")
    assert after < before


def test_lora_on_the_controlnet_loads_in_diffusers(fresh_pipe, data, tmp_path) -> None:  # noqa: ANN001
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.logger import ModelLogger

    pipe = fresh_pipe()
    module = train(
        pipe,
        data,
        steps=3,
        lr=1e-2,
        lora_base_model="controlnet",
        lora_target_modules=LORA_TARGETS,
        lora_rank=4,
    )
    assert all(
        ".lora_" in n and n.startswith("pipe.controlnet.") for n in module.trainable_param_names()
    )
    family = get_plugin_manager().get_family("qwen-image-controlnet")
    path = ModelLogger(tmp_path, "pipe.controlnet.", export_format="diffusers", family=family).write(
        module, module.state_dict(), "final", 3, 0
    )
    from safetensors.torch import load_file

    keys = list(load_file(str(path)))
    assert keys and all(k.startswith("controlnet.transformer_blocks.") for k in keys)
    ref, ours = _controlnet_outputs(pipe, path)
    assert (ref - ours).abs().max() < 1e-5


def _controlnet_outputs(pipe: Any, lora_file: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' ControlNet with the LoRA file loaded vs ours with the trained LoRA layers."""
    from diffusers import QwenImageControlNetModel

    ref = QwenImageControlNetModel.from_pretrained(pipe.controlnet_sources[0])
    plain = _run(ref)
    ref.load_lora_adapter(str(lora_file), prefix="controlnet")
    loaded = _run(ref)
    assert (loaded - plain).abs().max() > 1e-4  # the LoRA file has an effect in diffusers
    return loaded, _run(pipe.controlnet)


def _run(net: Any) -> torch.Tensor:
    """One ControlNet call on fixed random inputs (4x4 tokens, 5 text tokens)."""
    g = torch.Generator().manual_seed(0)
    latents, control = torch.randn(1, 16, 64, generator=g), torch.randn(1, 16, 64, generator=g)
    text = torch.randn(1, 5, 64, generator=g)
    with torch.no_grad():
        out = net(hidden_states=latents, controlnet_cond=control, conditioning_scale=1.0, timestep=torch.tensor([0.5]),
                  encoder_hidden_states=text, img_shapes=[[(1, 4, 4)]], return_dict=False)  # fmt: skip
    return torch.stack(list(out))


def test_lora_on_the_dit_keeps_the_controlnet_frozen(
    fresh_pipe, data, control_a, initial_latents
) -> None:  # noqa: ANN001
    pipe = fresh_pipe()
    net_before = {k: v.clone() for k, v in pipe.controlnet.state_dict().items()}
    module = train(
        pipe,
        data,
        steps=2,
        lr=1e-2,
        lora_base_model="dit",
        lora_target_modules=LORA_TARGETS,
        lora_rank=4,
    )
    assert all(n.startswith("pipe.dit.") and ".lora_" in n for n in module.trainable_param_names())
    assert all(torch.equal(v, net_before[k]) for k, v in pipe.controlnet.state_dict().items())
    assert (
        generate(pipe, control_a, initial_latents) - generate(pipe, None, initial_latents)
    ).abs().max() > 1e-2


def test_full_checkpoint_loads_directly_and_exports_for_diffusers(
    load_pipe, fresh_pipe, data, tmp_path, tiny_dir, control_a, initial_latents
) -> None:  # noqa: ANN001
    from diffusers import QwenImageControlNetModel

    from diffsynth_controlnet.export import export_checkpoint
    from diffsynth_core.plugins import get_plugin_manager
    from diffsynth_core.training.logger import ModelLogger

    pipe = fresh_pipe(controlnet_layers=1)
    module = train(pipe, data, steps=2, trainable_models="controlnet")
    family = get_plugin_manager().get_family("qwen-image-controlnet")
    path = ModelLogger(tmp_path, "pipe.controlnet.", export_format="diffusers", family=family).write(
        module, module.state_dict(), "step", 2, 0
    )
    trained = {k: v.clone() for k, v in pipe.controlnet.state_dict().items()}
    # 1. the checkpoint as --controlnet FILE (config read off the weights and the DiT)
    expected = generate(pipe, control_a, initial_latents)
    direct = load_pipe(controlnet=str(path))
    # equal up to float rounding: the loaded copy's weights sit in other memory (BLAS blocking)
    torch.testing.assert_close(generate(direct, control_a, initial_latents), expected, rtol=0, atol=1e-5)
    # 2. the diffusers layout, for QwenImageControlNetModel.from_pretrained
    folder = export_checkpoint(path, tiny_dir, tmp_path / "exported")
    model = QwenImageControlNetModel.from_pretrained(str(folder))
    assert (
        model.config.num_layers == 1
        and model.config.axes_dims_rope == pipe.dit.config.axes_dims_rope
    )
    assert trained.keys() == model.state_dict().keys()
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())


def test_training_inputs_carry_the_control_image_resized_to_the_target(
    tiny_pipe, make_edge_image
) -> None:  # noqa: ANN001
    from diffsynth_controlnet.conditioning import ControlImageMismatchError

    data = {
        "image": target_image(),
        "prompt": PROMPT,
        "control_image": make_edge_image((128, 128), (32, 24, 96, 88)),
    }
    shared, posi, nega = tiny_pipe.training_inputs(data)
    assert shared["control_image"] is data["control_image"]
    tiny_pipe.scheduler.set_timesteps(1000, training=True)
    try:
        shared, posi, _ = tiny_pipe.run_units({"cfg_scale": 1, **shared}, posi, nega)
        tokens = (SIDE // 16) ** 2  # the 128x128 control was brought to the target's size
        assert shared["control_latents"][0].shape == (1, tokens, 64)
        bad = {**data, "control_image": make_edge_image((64, 128))}
        with pytest.raises(ControlImageMismatchError):
            tiny_pipe.run_units({"cfg_scale": 1, **tiny_pipe.training_inputs(bad)[0]}, posi, nega)
    finally:
        tiny_pipe.scheduler.set_timesteps(4, image_seq_len=16)


def test_a_controlnet_named_only_at_run_time_in_training_is_refused(fresh_pipe, data) -> None:  # noqa: ANN001
    """Python callers who skip the load options: the optimizer would not hold a ControlNet
    attached in the first step, so that is an error, not an untrained ControlNet."""
    from diffsynth_core.errors import ConfigError

    pipe = fresh_pipe(controlnet_layers=1)
    train(pipe, data, steps=1, trainable_models="controlnet", extra={"controlnet_layers": 1})
    with pytest.raises(ConfigError, match="must be given when the pipeline is loaded"):
        train(pipe, data, steps=1, trainable_models="controlnet", extra={"controlnet_layers": 2})


def test_training_load_needs_a_controlnet(tiny_dir, tmp_path) -> None:  # noqa: ANN001
    import shutil

    from diffsynth_controlnet.loading import load_controlnet_pipeline
    from diffsynth_core.errors import ConfigError

    qwen = tmp_path / "qwen-image"  # a Qwen-Image copy without controlnet/
    shutil.copytree(tiny_dir, qwen, ignore=shutil.ignore_patterns("controlnet"))
    with pytest.raises(ConfigError, match="pass --controlnet DIR .* or --controlnet-layers N"):
        load_controlnet_pipeline(model_path=str(qwen))
    assert load_controlnet_pipeline(model_path=str(qwen), controlnet_layers=1).controlnet
