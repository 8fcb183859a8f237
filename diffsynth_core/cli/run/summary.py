"""The start-up summary of ``diffsynth train``: what is about to happen, before it does."""

from __future__ import annotations

from typing import Any


def _count(n: int) -> str:
    return f"{n:,}"


def _per_step(plan: Any) -> str:
    real, nominal = plan.samples_per_step, plan.nominal_samples_per_step
    if real == nominal:
        return f"{real} per step"
    return f"{real} per step (not {nominal}: batches hold at most the samples of one size bucket)"


# settings the lines above already show; the others are listed by section when not the default
SHOWN = {
    "model", "preset", "model_path", "dataset", "repeat", "output", "batch_size",
    "gradient_accumulation_steps", "max_steps", "num_epochs", "learning_rate", "lr_scheduler",
    "mixed_precision", "lora_rank", "lora_base_model", "lora_target_modules", "trainable_models",
}  # fmt: skip


def settings_lines(config: Any) -> list[str]:
    """One line per section (settings.py) of the settings given a value other than the
    declared default, e.g. ``  saving      : save_every_n_steps 3, keep_last 2``."""
    from ...training.settings import SETTINGS

    sections: dict[str, list[str]] = {}
    for s in SETTINGS:
        value = getattr(config, s.name)
        if s.name not in SHOWN and s.on_resume != "per_start" and value != s.default:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            sections.setdefault(s.section, []).append(f"{s.name} {shown}")
    return [f"  {section:<12}: {', '.join(items)}" for section, items in sections.items()]


ADAPTERS = {"lora": "LoRA", "lokr": "LoKr", "loha": "LoHa"}


def adapter_name(c: Any) -> str:
    """``LoRA``, ``LoKr`` or ``LoHa``, with DoRA / rsLoRA when asked for (the summary's word)."""
    name = ADAPTERS.get(c.lora_type, c.lora_type)
    extras = [label for label, on in (("DoRA", c.use_dora), ("rsLoRA", c.use_rslora)) if on]
    return f"{name} ({', '.join(extras)})" if extras else name


def startup_summary(run: Any, where: str, module: Any, dataset: Any, accelerator: Any) -> str:
    """Family, model files, trainable parameters, data, effective batch, steps, output, and
    every other setting not at its default."""
    from ...data import validate
    from ...training.batches import EpochBatches

    c, family = run.config, run.family
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    what = (
        f"{adapter_name(c)} rank {c.lora_rank} on {c.lora_base_model} ({c.lora_target_modules})"
        if c.lora_base_model
        else ""
    )
    what = ", ".join(
        x for x in (what, f"full: {c.trainable_models}" if c.trainable_models else "") if x
    )
    report = validate(dataset, decode=False)  # headers only: --check-data decodes
    refused = (
        f"{len(report.refused_rows)} refused (see --check-data)"
        if report.refused_rows
        else "0 refused"
    )
    plan = EpochBatches(
        dataset,
        c.batch_size,
        c.gradient_accumulation_steps,
        c.seed,
        accelerator.num_processes,
        accelerator.process_index,
    )
    steps = c.max_steps if c.max_steps else c.num_epochs * plan.steps_per_epoch
    lines = [
        f"diffsynth train: {family.name} (plugin {family.plugin}{' ' + family.version if family.version else ''})",
        f"  model files : {where}",
        f"  trainable   : {_count(trainable)} parameters; {what}",
        f"  dataset     : {c.dataset}: {report.total_rows} rows, {refused}; x{c.repeat} = {_count(len(dataset))} samples",
        f"  batch       : {c.batch_size} x {c.gradient_accumulation_steps} accumulation x {accelerator.num_processes} process(es) = {_per_step(plan)}",
        f"  steps       : {steps} ({plan.steps_per_epoch} per epoch), lr {c.learning_rate:g} {c.lr_scheduler}, precision {accelerator.mixed_precision}",
        f"  output      : {c.output}",
        *settings_lines(c),
    ]
    if getattr(run, "overrides", None):  # --resume: the saved settings, then each change
        lines.append(f"  resumed     : {run.overrides[0]}")
        lines += [f"    override  : {line}" for line in run.overrides[1:]]
    return "\n".join(lines)
