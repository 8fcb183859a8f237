"""The split plan from unit declarations alone (no model is loaded)."""

from __future__ import annotations

from typing import Any

from diffsynth_core.cache.plan import plan_units
from diffsynth_core.pipeline import PipelineUnit


def unit(name: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (), models: tuple[str, ...] = (),
         cacheable: bool = True, **kw: Any) -> PipelineUnit:  # fmt: skip
    made = type(name, (PipelineUnit,), {})(
        input_params=inputs,
        output_params=outputs,
        onload_model_names=models,
        cacheable=cacheable,
        **kw,
    )
    return made


def text_to_image() -> list[PipelineUnit]:
    return [
        unit("Shape", ("height", "width"), ("height", "width"), cacheable=False),
        unit("Noise", ("height", "width", "seed"), ("noise",), cacheable=False),
        unit("Image", ("input_image",), ("input_latents",), ("vae",)),
        unit("Start", ("noise", "input_latents"), ("latents",), cacheable=False),
        unit("Prompt", ("batch_size",), ("prompt_emb",), ("text_encoder",), separate_cfg=True,
             input_params_posi={"prompt": "prompt"}, input_params_nega={"prompt": "negative_prompt"}),
    ]  # fmt: skip


def test_frozen_encoders_are_cached_and_their_models_not_needed() -> None:
    plan = plan_units(
        text_to_image(), ("dit", "vae", "text_encoder"), trained={"dit"}, keep={"dit"}
    )
    assert plan.cached == ("Image", "Prompt")
    assert plan.per_step == ("Shape", "Noise", "Start")
    assert plan.dropped_models == ("vae", "text_encoder") and plan.kept_models == ("dit",)
    text = plan.format()
    assert "models not loaded when training with --cache: vae, text_encoder" in text


def test_a_unit_downstream_of_a_per_step_unit_runs_every_step() -> None:
    units = text_to_image() + [unit("Pixels", ("height", "input_image"), ("pixels",), ("vae",))]
    plan = plan_units(units, ("dit", "vae", "text_encoder"), keep={"dit"})
    role = next(r for r in plan.units if r.name == "Pixels")
    assert not role.cached and role.reason == "reads height from Shape, which runs every step"
    assert "vae" not in plan.dropped_models  # a per-step unit still needs it
    noisy = [*text_to_image(), unit("Mix", ("noise",), ("mixed",))]
    assert "Mix" in plan_units(noisy, ()).per_step  # fed by the noise


def test_a_trained_encoder_runs_every_step_and_stays_loaded() -> None:
    plan = plan_units(
        text_to_image(),
        ("dit", "vae", "text_encoder"),
        trained={"dit", "text_encoder"},
        keep={"dit"},
    )
    assert plan.cached == ("Image",) and plan.dropped_models == ("vae",)
    assert (
        next(r for r in plan.units if r.name == "Prompt").reason == "uses the trained text_encoder"
    )


def test_the_denoiser_is_never_dropped_and_branch_outputs_are_tracked() -> None:
    units = [
        unit("Prompt", (), ("prompt_emb",), ("text_encoder",), separate_cfg=True, input_params_posi={"prompt": "prompt"}),
        unit("Refine", (), ("prompt_emb",), ("dit",), separate_cfg=True, input_params_posi={"emb": "prompt_emb"}),
    ]  # fmt: skip
    plan = plan_units(units, ("dit", "text_encoder"), keep={"dit"})
    assert plan.cached == ("Prompt", "Refine") and plan.dropped_models == ("text_encoder",)
    units.insert(0, unit("Drop", (), ("prompt",), cacheable=False, separate_cfg=True))
    assert plan_units(units, ("dit", "text_encoder")).cached == ()  # the prompt itself varies


def test_a_take_over_unit_without_outputs_makes_every_later_unit_per_step() -> None:
    units = [unit("All", take_over=True), *text_to_image()]
    plan = plan_units(units, ("dit", "vae", "text_encoder"))
    assert plan.cached == () and plan.dropped_models == ()
