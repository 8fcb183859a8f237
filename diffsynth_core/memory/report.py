"""``diffsynth train ... --estimate-memory [--gpu-memory 24GiB]``: the report and its settings line.

Called by the CLI after the settings are resolved and before anything is loaded or written:
it reads the family's ``RealSize``, estimates the configured run, prints the peak by category
and, given a budget, the cheapest settings that fit as flags to paste. Exit status 0, or 1
when a budget is given and nothing fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .budget import gib, parse_budget
from .spec import RealSize, Shape


def family_spec(family: Any) -> RealSize:
    """The family's RealSize, or a ConfigError saying the family declares none."""
    from ..lora.formats import resolve

    ref = getattr(family, "real_size", None)
    spec = resolve(ref, f"{family.name}: real_size") if ref is not None else None
    if not isinstance(spec, RealSize):
        raise ConfigError(
            f"--estimate-memory: family {family.name!r} declares no real-size model "
            "(ModelFamily.real_size), so its memory cannot be estimated"
        )
    return spec


def batch_shape(config: Any, family: Any) -> Shape:
    """The batch the run trains on: --height/--width, else the family's sample aspect at
    --max-pixels (rounded down to the family's division factor)."""
    d = family.defaults
    height, width = config.height, config.width
    if not (height and width):
        scale = math.sqrt(config.max_pixels / (d.sample_height * d.sample_width))
        f = d.division_factor
        height = height or max(f, int(d.sample_height * scale) // f * f)
        width = width or max(f, int(d.sample_width * scale) // f * f)
    return Shape(config.batch_size, height, width, config.num_frames)


def memory_settings(config: Any, family: Any) -> Any:
    """The estimate's settings from the run's TrainConfig."""
    from .estimate import MemorySettings

    return MemorySettings(
        shape=batch_shape(config, family),
        base_precision=config.base_precision or "bf16",
        blocks_to_swap=config.blocks_to_swap or 0,
        cache=bool(config.cache),
        gradient_checkpointing=bool(config.gradient_checkpointing),
        gradient_checkpointing_offload=bool(config.gradient_checkpointing_offload),
        lora_base_model=config.lora_base_model,
        lora_target_modules=config.lora_target_modules or "",
        lora_rank=config.lora_rank,
        trainable_models=config.trainable_models or "",
        mixed_precision=config.mixed_precision or "bf16",
        optimizer=config.optimizer,
    )


def settings_line(s: Any, family: str) -> str:
    """The memory flags of ``s``, to paste into ``diffsynth train``."""
    flags = [f"--base-precision {s.base_precision}", f"--blocks-to-swap {s.blocks_to_swap}"]
    if s.cache:
        flags.append(f"--cache cache/{family}")
    flags.append(
        "--gradient-checkpointing" if s.gradient_checkpointing else "--no-gradient-checkpointing"
    )
    if s.gradient_checkpointing_offload:
        flags.append("--gradient-checkpointing-offload")
    return " ".join(flags)


def format_estimate(estimate: Any, spec: RealSize, family: str) -> list[str]:
    """The report's lines for one estimate: settings, categories, peak."""
    s, d = estimate.settings, estimate.details
    trained = (
        "full training" if s.trainable_models else f"LoRA rank {s.lora_rank} on {s.lora_base_model}"
    )
    math_extra = d.get("math_attention_extra", 0)
    lines = [
        f"memory estimate: {family}, {spec.name or spec.model}, {trained}, {s.shape.describe()}",
        f"  settings: {settings_line(s, family)} --mixed-precision {s.mixed_precision} --optimizer {s.optimizer}",
        f"  {'base weights (' + s.base_precision + ')':<44}{gib(estimate.base_weights):>10}",
        f"  {'encoders (' + ('none: cached' if s.cache else ' + '.join(spec.frozen) or 'none') + ')':<44}{gib(estimate.encoders):>10}",
        f"  {'trainable (weights + gradients + optimizer)':<44}{gib(estimate.trainable):>10}",
        f"  {'activations':<44}{gib(estimate.activations):>10}",
        f"  {'temporaries':<44}{gib(estimate.temporaries):>10}",
        f"  {'predicted peak':<44}{gib(estimate.peak):>10}",
    ]
    if math_extra:
        lines.append(
            "  attention counted as the GPU's flash/SDPA kernel (no N x N scores kept); "
            f"a math kernel, as on CPU, would keep ~{gib(math_extra)} more"
        )
    return lines + [f"  note: {note}" for note in estimate.notes]


def estimate_memory(config: Any, family: Any, echo: Callable[[str], None] = print) -> int:
    """The ``--estimate-memory`` command: print the report; exit status."""
    budget = parse_budget(config.gpu_memory) if config.gpu_memory else None
    spec = family_spec(family)
    from .estimate import Estimator
    from .search import cheapest_fit

    estimator = Estimator(spec, tuple(getattr(family, "blocks", {}).get(spec.model, ())))
    settings = memory_settings(config, family)
    estimate = estimator.estimate(settings)
    for line in format_estimate(estimate, spec, family.name):
        echo(line)
    if config.preset or config.model_path:
        echo(
            "  note: the estimate is of the released model's size; --preset/--model-path are not read"
        )
    echo(
        f"  how: 1 and 2 of {spec.units} repeating units of blocks built at real width in a "
        "FakeTensorMode (no weights), one step each under torch's MemTracker, scaled per unit"
    )
    if budget is None:
        return 0
    if estimate.peak <= budget:
        echo(f"fits in {gib(budget)}: {settings_line(settings, family.name)}")
        return 0
    fit = cheapest_fit(estimator, settings, budget)
    if fit is None:
        echo(
            f"does not fit in {gib(budget)} with any base precision, cache, checkpointing or block swap: lower the resolution, batch or rank"
        )
        return 1
    echo(f"the cheapest settings that fit {gib(budget)} (predicted {gib(fit.estimate.peak)}):")
    echo(f"  {settings_line(fit.estimate.settings, family.name)}")
    if fit.estimate.settings.cache and not settings.cache:
        echo(
            f"  (--cache: the folder `diffsynth cache` writes for this dataset: run it first into cache/{family.name})"
        )
    return 0
