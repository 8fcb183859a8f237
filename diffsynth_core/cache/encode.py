"""``diffsynth cache``: run the cached units once per data row and store what they give.

Every process of an ``accelerate launch`` builds the same pipeline and encodes rows
``rank, rank + world, ...``; a shard exists only once complete, so a killed run resumes where
it stopped (rows whose shard matches are kept), and a cache built by any number of processes
holds the same shards. The main process writes ``index.json`` once every row is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadSampleError, ConfigError, PluginError
from .fingerprint import digest, row_fingerprints, row_hash, settings_fingerprint, unit_fingerprint
from .folder import INDEX, CacheFolder
from .keys import call_key, copied, delta
from .plan import CachePlan, plan_for, plan_units

Inputs = dict[str, Any]


@dataclass
class CacheReport:
    folder: Path
    rows: int
    encoded: int
    reused: int
    bad: int
    seconds: float
    plan: CachePlan
    main_process: bool = True

    def summary(self) -> str:
        return (
            f"cache {self.folder}: {self.rows} rows ({self.encoded} encoded here, {self.reused} "
            f"kept from before, {self.bad} bad) in {self.seconds:.1f} s; units cached: "
            f"{', '.join(self.plan.cached)}; train with --cache {self.folder} (not loaded: "
            f"{', '.join(self.plan.dropped_models) or 'none'})"
        )


def cache_module(run: Any, accelerator: Any) -> tuple[Any, CachePlan, str]:
    """(the training module ``diffsynth cache`` encodes with, its plan, a note): the one place
    it builds its pipeline.

    The denoisers (``ModelFamily.blocks``: the largest models, never needed by a cached unit)
    are not loaded, so a cache for a 20B DiT is built on a GPU that holds only the encoders.
    Nothing is trained here, so the plan comes from the run's settings (the models it trains)
    and the units' declarations, as training computes it. A family whose loader cannot do
    without its denoiser is loaded whole, as training loads it, and the note says so."""
    from ..cli.run.build import build_module

    lean = _without_denoisers(run, accelerator)
    if lean is not None:
        return lean, _plan(run, lean.pipe), ""
    module, _where = build_module(run, accelerator)
    note = f"{run.family.name}'s loader needs its denoiser: every model was loaded"
    return module, plan_for(module.pipe), note


def _trained(run: Any) -> set[str]:
    """The models the run trains: the LoRA base and --trainable-models."""
    from ..lora.inject import split_targets

    c = run.config
    return set(split_targets(c.trainable_models or "")) | ({c.lora_base_model} - {None, ""})


def _encoders(family: Any) -> tuple[str, ...]:
    """The models ``--base-precision`` stores quantized here: those the family declares
    (``high_precision_modules``) but its denoisers."""
    from ..training.quantize import quantized_models

    denoisers = set(getattr(family, "blocks", {}) or {})
    return tuple(m for m in quantized_models(family) if m not in denoisers)


def _plan(run: Any, pipe: Any) -> CachePlan:
    denoisers = set(getattr(run.family, "blocks", {}) or {})
    return plan_units(pipe.units, pipe.model_names, _trained(run), denoisers)


def _without_denoisers(run: Any, accelerator: Any) -> Any:
    """The module over a pipeline loaded without the family's denoisers, in training mode
    without LoRA (what the cached units run is frozen); None when the loader needs them.

    ``--base-precision`` stores the encoders the family declares (its text encoder) quantized:
    loaded on the CPU, quantized there, then moved, so the GPU never holds them in full
    precision (Qwen2.5-VL-7B: 16.6 GB in bf16, 8.3 GB in fp8)."""
    from ..cli.run.build import module_inputs, pipeline_dtype
    from ..cli.run.presets import COMPONENT_FLAGS, model_configs
    from ..errors import DiffSynthError
    from ..pipeline import load_pipeline
    from ..plugins import get_plugin_manager
    from ..training import quantize
    from ..training.module import PipelineTrainingModule, switch_pipe_to_training_mode

    c, family = run.config, run.family
    denoisers = set(getattr(family, "blocks", {}) or {})
    if not denoisers:
        return None
    files = {flag: getattr(c, flag) for flag in COMPONENT_FLAGS}
    configs, _ = model_configs(family, c.model_path, c.preset, c.allow_pickle, files)
    lean = {name: config for name, config in configs.items() if name not in denoisers}
    device, quantized = str(accelerator.device), c.base_precision in quantize.QUANTIZED
    try:
        pipe: Any = load_pipeline(family, lean, device="cpu" if quantized else device,
                             torch_dtype=pipeline_dtype(accelerator), options=run.options, purpose="train")  # fmt: skip
    except DiffSynthError:
        raise  # the user's to fix (a missing file ...): loading everything would say the same
    except Exception:  # noqa: BLE001 -- the family's loader reads a denoiser: load it whole
        return None
    done = quantize.apply_base_precision(pipe, c.base_precision, models=_encoders(family))
    pipe.base_precision_note = quantize.describe(done, c.base_precision)
    if quantized and device != "cpu":
        pipe.to(device)
        pipe.device = accelerator.device
    switch_pipe_to_training_mode(pipe)  # frozen, eval, the training schedule
    return PipelineTrainingModule(pipe, get_plugin_manager().get_loss(c.loss), module_inputs(run))


Call = tuple[str, str, Any]  # (key, unit name, entry)


def encode_sample(
    module: Any, plan: CachePlan, data: Any, known: set[str] | None = None
) -> tuple[list[Call], list[Call]]:
    """(key, unit name, entry) of each cached unit, run in order on one sample's inputs; and
    the variants shared by rows (keys in ``known`` are not computed again).

    The per-step units are skipped: by the plan's rule no cached unit reads their outputs."""
    pipe, cached = module.pipe, set(plan.cached)
    shared, posi, nega = module.initial_inputs(data)
    out: list[Call] = []
    variants: list[Call] = []
    known = set() if known is None else known
    for unit in pipe.units:
        if unit.name not in cached:
            continue
        key = call_key(unit, shared, posi, nega)
        if key is None:
            raise PluginError(
                f"unit {unit.name} is flagged cacheable but one of its inputs cannot be hashed "
                "(tensors, numbers, strings, PIL images and lists of them can)"
            )
        before = (dict(shared), dict(posi), dict(nega))
        shared, posi, nega = pipe.unit_runner(unit, pipe, shared, posi, nega)
        parts = [
            copied(delta(b, a), "cpu") for b, a in zip(before, (shared, posi, nega), strict=True)
        ]
        out.append((key, unit.name, (parts[0], parts[1], parts[2])))
        if unit.separate_cfg:
            variants += _negative_as_positive(pipe, unit, key, before, known)
    return out, variants


def _negative_as_positive(
    pipe: Any, unit: Any, key: str, before: tuple[Inputs, Inputs, Inputs], known: set[str]
) -> list[Call]:
    """The unit's positive branch run on the negative branch's inputs (the empty caption
    training gets when a caption is dropped), so that a dropped caption is in the cache too."""
    shared, posi, nega = before
    swapped = dict(posi)
    for name, source in unit.input_params_posi.items():
        if name in unit.input_params_nega:
            swapped[source] = nega.get(unit.input_params_nega[name])
    other = call_key(unit, shared, swapped, nega)
    if other is None or other == key or other in known:
        return []
    known.add(other)
    after = pipe.unit_runner(unit, pipe, dict(shared), dict(swapped), dict(nega))
    parts = [
        copied(delta(b, a), "cpu") for b, a in zip((shared, swapped, nega), after, strict=True)
    ]
    return [(other, unit.name, (parts[0], parts[1], parts[2]))]


def _encode_row(
    module: Any, plan: CachePlan, dataset: Any, row: int, accelerator: Any, known: set[str]
) -> tuple[list[Call], list[Call], str | None]:
    import torch

    from ..data import collate_samples, split_bad

    try:
        sample = dataset.load(row)
    except BadSampleError as error:
        if dataset.on_bad_sample == "error":
            raise
        return [], [], str(error)  # training skips this row too
    data, _bad = split_bad(collate_samples([sample]))
    with torch.no_grad(), accelerator.autocast():
        entries, variants = encode_sample(module, plan, data, known)
    return entries, variants, None


def build_cache(
    run: Any,
    output: str | Path,
    command: str,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> CacheReport:
    """Build (or resume) the cache of ``run``'s dataset in ``output``."""
    from tqdm.auto import tqdm

    from ..cli.run.build import build_dataset, check_base_precision_runs, make_accelerator
    from ..cli.run.presets import model_configs

    started = time.monotonic()
    c = run.config
    if c.batch_size != 1:
        raise ConfigError(
            "--batch-size does not apply to `diffsynth cache` (it encodes one row at a time)"
        )
    accelerator = make_accelerator(c)
    dataset = build_dataset(c, run.family)
    rows = row_fingerprints(dataset)
    check_base_precision_runs(c.base_precision, accelerator)  # before anything loads
    module, plan, note = cache_module(run, accelerator)
    pipe = module.pipe
    if accelerator.is_main_process:
        for line in (f"note: {note}" if note else "", getattr(pipe, "base_precision_note", "")):
            if line:
                echo(line)
    if not plan.cached:
        raise ConfigError(
            f"{run.family.name}: no unit can be cached with these settings (see `diffsynth train "
            "--explain-cache`), so a cache would hold nothing"
        )
    configs, _ = model_configs(run.family, c.model_path, c.preset, c.allow_pickle)
    fingerprint = {
        **settings_fingerprint(run, configs, pipe.torch_dtype),
        **unit_fingerprint(plan, pipe, module.extra_inputs),
        # recorded, not compared with a training run's (its --base-precision is the DiT's):
        # a cache rebuilt at another precision encodes every row again
        "encoder_precision": c.base_precision or "as loaded",
    }
    settings = digest(fingerprint)
    folder = CacheFolder(output)
    if accelerator.is_main_process:
        folder.prepare()
        (folder.root / INDEX).unlink(missing_ok=True)  # the cache is incomplete until the end
        for stale in folder.rows.glob("row-*.safetensors"):  # rows the dataset no longer has
            if int(stale.stem.split("-")[1]) >= len(rows):
                stale.unlink()
        for variant in folder.variants():  # variants of other settings
            if (folder.header(variant) or {}).get("settings") != settings:
                variant.unlink()
    accelerator.wait_for_everyone()
    mine = list(range(len(rows)))[accelerator.process_index :: accelerator.num_processes]
    encoded = reused = bad = 0
    known: set[str] = set()  # variants this process has written
    bar = tqdm(
        mine, desc="cache", unit="row", disable=not (progress and accelerator.is_main_process)
    )
    for row in bar:
        digest_now = row_hash(rows[row])
        if folder.done(row, digest_now, settings):
            reused += 1
            continue
        entries, variants, why = _encode_row(module, plan, dataset, row, accelerator, known)
        for key, unit, entry in variants:  # first: a row's shard implies its variants exist
            folder.write_variant(key, settings, unit, entry)
        folder.write(row, digest_now, settings, entries, why)
        encoded, bad = encoded + 1, bad + (why is not None)
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_index(folder, rows, fingerprint, settings, plan, command)
    accelerator.wait_for_everyone()
    return CacheReport(folder.root, len(rows), encoded, reused, bad, time.monotonic() - started, plan,
                       accelerator.is_main_process)  # fmt: skip


def _write_index(
    folder: CacheFolder,
    rows: list[dict[str, Any]],
    fingerprint: dict[str, Any],
    settings: str,
    plan: CachePlan,
    command: str,
) -> None:
    listed = []
    for index, row in enumerate(rows):
        header = folder.header(index)
        if header is None or header["settings"] != settings or header["row_hash"] != row_hash(row):
            raise ConfigError(
                f"cache row {index} ({row['label']}) was not written; run the command again"
            )
        listed.append({**row, "bad": header.get("bad")})
    folder.write_index({"fingerprint": fingerprint, "settings": settings, "plan": plan.as_json(),
                        "rows": listed, "command": command})  # fmt: skip
