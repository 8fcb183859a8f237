"""``check_family_conformance``: what every model family must do, as one call for its tests.

    from diffsynth_core.testing import check_family_conformance

    def test_my_family_conforms(tmp_path):
        check_family_conformance("my-family", workdir=tmp_path)

It checks, on the family's tiny preset: it builds; it loads through ``load_pipeline`` (the path
users' weights take); the blocks it declares (``ModelFamily.blocks``) exist; one training step has a finite loss and changes the trainable weights;
inference returns an image (or frames) of the requested size; a LoRA exported by
``ModelLogger`` reads back to the same weights in every built-in format, and merged into a
freshly loaded pipeline predicts what the LoRA-injected pipeline predicts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class ConformanceError(AssertionError):
    """A family breaks one of the rules; the message says which and how."""


@dataclass
class ConformanceReport:
    family: str
    passed: list[str] = field(default_factory=list)

    def check(self, ok: bool, rule: str, problem: str) -> None:
        if not ok:
            raise ConformanceError(f"family {self.family!r}: {rule}: {problem}")
        self.passed.append(rule)


def default_sample(family: Any, height: int, width: int) -> dict[str, Any]:
    """One training sample for ``family``: an image per image column, frames per video column."""
    from .data import make_image

    defaults = family.defaults
    image = make_image((200, 60, 40), (width, height))
    sample: dict[str, Any] = {"prompt": "a red picture with a light square"}
    for key in dict.fromkeys(defaults.data_file_keys + defaults.required_columns):
        if key == "prompt":
            continue
        sample[key] = [image] * (defaults.num_frames or 9) if "video" in key else image
    return sample


def _prediction(pipe: Any, data: dict[str, Any], inputs: Mapping[str, Any]) -> torch.Tensor:
    """``model_fn`` on fixed noise and timestep: the quantity LoRA must change identically."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        shared, posi, nega = pipe.training_inputs(data)
        shared, posi, nega = pipe.run_units(
            {"cfg_scale": 1, "rand_device": pipe.device, **shared, **inputs}, posi, nega
        )
        x0 = shared["input_latents"]
        noise = torch.randn_like(x0)
        timestep = pipe.scheduler.timesteps[[len(pipe.scheduler.timesteps) // 2] * x0.shape[0]].to(
            x0.device
        )
        latents = pipe.scheduler.add_noise(x0, noise, timestep)
        return pipe.model_fn(
            **{**shared, **posi, "latents": latents, "timestep": timestep.to(x0.dtype)}
        ).float()


def check_family_conformance(
    family_name: str,
    workdir: str | Path | None = None,
    sample: dict[str, Any] | None = None,
    height: int = 64,
    width: int = 64,
    lora_rank: int = 4,
    inputs: Mapping[str, Any] | None = None,
) -> ConformanceReport:
    """Run every check on ``family_name`` (installed or registered); raises ConformanceError.

    ``inputs``: pipeline inputs given to every training step and generation, such as a family
    option's value (``{"edit_image_pixels": 4096}``: a small edit image, for a fast check)."""
    inputs = dict(inputs or {})
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="diffsynth-conformance-") as tmp:
            return check_family_conformance(family_name, tmp, sample, height, width, lora_rank, inputs)
    from ..plugins import get_plugin_manager

    family = get_plugin_manager().get_family(family_name)
    report = ConformanceReport(family_name)
    folder = Path(workdir) / "tiny"
    build_tiny = family.build_tiny
    report.check(build_tiny is not None, "tiny preset", "ModelFamily.build_tiny is not set")
    assert build_tiny is not None  # check() raised otherwise
    build_tiny(folder)
    data = sample or default_sample(family, height, width)
    module = _training_module(report, family, folder, lora_rank, inputs)
    _check_blocks(report, family, module.pipe)
    _check_training_step(report, module, data)
    _check_inference(report, family, module.pipe, height, width, {**data, **inputs}, inputs)
    _check_lora_round_trip(report, family, module, folder, data, inputs)
    return report


def _check_blocks(report: ConformanceReport, family: Any, pipe: Any) -> None:
    """Each model named in ``ModelFamily.blocks`` has the block lists it declares."""
    from ..blocks import block_lists
    from ..errors import ConfigError

    for model, names in family.blocks.items():
        try:
            lists = block_lists(pipe, model)
        except ConfigError as error:
            report.check(False, "declared blocks", str(error))
        report.check(
            len(lists) == len(names) and all(len(blocks) > 0 for blocks in lists),
            "declared blocks",
            f"{model}: {', '.join(names)} must be non-empty ModuleLists of the loaded model",
        )


def _load(family: Any, folder: Path) -> Any:
    from ..pipeline import load_pipeline

    return load_pipeline(family, model_path=str(folder))


def _training_module(
    report: ConformanceReport, family: Any, folder: Path, lora_rank: int, inputs: Mapping[str, Any]
) -> Any:
    from ..pipeline import BasePipeline
    from ..plugins import get_plugin_manager
    from ..training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    pipe = _load(family, folder)
    report.check(
        isinstance(pipe, BasePipeline),
        "load_pipeline",
        f"returned {type(pipe).__name__}, not a BasePipeline",
    )
    report.check(bool(pipe.units), "pipeline units", "the pipeline has no units")
    d = family.defaults
    switch_pipe_to_training_mode(
        pipe,
        lora_base_model=d.lora_base_model,
        lora_target_modules=d.lora_target_modules,
        lora_rank=lora_rank,
    )
    extra = {"use_gradient_checkpointing": d.gradient_checkpointing, **inputs}
    return PipelineTrainingModule(pipe, get_plugin_manager().get_loss("sft"), extra)


def _check_training_step(report: ConformanceReport, module: Any, data: dict[str, Any]) -> None:
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    report.check(
        bool(params),
        "trainable weights",
        "LoRA injection left nothing trainable (check lora_target_modules)",
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-3)
    loss = module(data)
    report.check(
        bool(torch.isfinite(loss)) and loss.requires_grad,
        "training loss",
        f"loss {loss} is not finite or has no gradient",
    )
    loss.backward()
    optimizer.step()
    changed = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    report.check(bool(changed), "training step", "one optimizer step changed no trainable weight")


def _call_inputs(family: Any, pipe: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The sample's required columns that the pipeline's ``__call__`` takes by name (an edit
    family's ``edit_image``): the inputs without which it cannot generate."""
    import inspect

    parameters = inspect.signature(type(pipe).__call__).parameters
    named = {n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    wanted = set(family.defaults.required_columns) - {"prompt"}
    return {key: value for key, value in data.items() if key in wanted and key in named}


def _check_inference(
    report: ConformanceReport, family: Any, pipe: Any, height: int, width: int,
    data: dict[str, Any], inputs: Mapping[str, Any],
) -> None:
    from ..training.sampling import untouched_training_state

    with untouched_training_state(pipe):
        result = pipe(
            prompt="a test picture", height=height, width=width, seed=0, num_inference_steps=2,
            **_call_inputs(family, pipe, data), **inputs,
        )  # fmt: skip
    frames = result if isinstance(result, list) else [result]
    sizes = {getattr(f, "size", None) for f in frames}
    report.check(
        sizes == {(width, height)}, "inference", f"asked for {width}x{height}, got {sizes}"
    )


def _check_lora_round_trip(
    report: ConformanceReport, family: Any, module: Any, folder: Path, data: dict[str, Any],
    inputs: Mapping[str, Any],
) -> None:
    from ..lora.inject import lora_state_dict, merge_lora, read_lora_file
    from ..training.logger import ModelLogger

    base_name = family.defaults.lora_base_model
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for name, param in module.named_parameters():
            if "lora_" in name:  # random, not zero: B starts at zero and would hide mistakes
                param.normal_(0, 0.05)
    expected = lora_state_dict(getattr(module.pipe, base_name))
    trained = _prediction(module.pipe, data, inputs)
    for export_format in ("diffusers", "comfyui", "peft"):
        logger = ModelLogger(
            folder.parent / export_format,
            family.defaults.remove_prefix_in_ckpt,
            export_format=export_format,
            family=family,
        )
        path = logger.write(module, module.state_dict(), "final", 1, 0)
        fresh = _load(family, folder)
        back = read_lora_file(path, getattr(fresh, base_name), family=family)
        same = back.keys() == expected.keys() and all(
            torch.allclose(back[k].float(), expected[k].float()) for k in expected
        )
        report.check(
            same, f"LoRA export ({export_format})", f"{path} does not read back to the trained LoRA"
        )
        untouched = _prediction(_training_mode(fresh), data, inputs)
        merge_lora(getattr(fresh, base_name), back)
        merged = _prediction(fresh, data, inputs)
        report.check(
            not torch.allclose(untouched, trained, atol=1e-4),
            "LoRA effect",
            "the LoRA does not change the prediction",
        )
        report.check(
            torch.allclose(merged, trained, rtol=1e-3, atol=1e-4),
            f"LoRA merge ({export_format})",
            "merged weights predict otherwise than the LoRA layers",
        )


def _training_mode(pipe: Any) -> Any:
    from ..training.module import switch_pipe_to_training_mode

    switch_pipe_to_training_mode(pipe)  # training timesteps, frozen weights, no LoRA
    return pipe
