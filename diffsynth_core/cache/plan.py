"""Which units a cache holds, which run every step, and which models training then skips.

Decided from the units' declarations alone (``PipelineUnit``: ``input_params``,
``input_params_posi`` / ``_nega``, ``output_params``, ``onload_model_names``, ``cacheable``,
``take_over``, ``separate_cfg``), walking the units in the order they run:

* a unit is **cached** when it is flagged ``cacheable``, none of its models is trained (full
  weights or LoRA), and none of its inputs was last produced by a unit that runs every step;
* every other unit runs **every step**: the noise (not cacheable: it draws random numbers),
  anything downstream of a per-step unit, units whose model is trained, and take-over units
  (they may read and write anything; one that declares no outputs makes every later unit run
  every step too). The timesteps are drawn by the loss, every step, outside any unit.

A pipeline model is **not needed for training** when cached units use it and no per-step unit
does, it is neither trained nor the LoRA base, and it is not a denoiser (a model the family
declares repeated blocks for in ``ModelFamily.blocks``; the model ``model_fn`` calls is never
dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ALL = "*"  # a take-over unit without declared outputs may produce any input


@dataclass(frozen=True)
class UnitRole:
    """One unit in the plan: cached or per step, and why."""

    name: str
    cached: bool
    reason: str
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class CachePlan:
    units: tuple[UnitRole, ...]
    dropped_models: tuple[str, ...]
    kept_models: tuple[str, ...] = ()
    trained_models: tuple[str, ...] = field(default=())

    @property
    def cached(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.units if u.cached)

    @property
    def per_step(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.units if not u.cached)

    def as_json(self) -> dict[str, Any]:
        return {"cached": list(self.cached), "dropped_models": list(self.dropped_models)}

    def format(self) -> str:
        """The plan as ``--explain-cache`` prints it."""
        lines = ["cached (run once by `diffsynth cache`):"]
        lines += [
            f"  {u.name}  [{', '.join(u.models) or 'no model'}]" for u in self.units if u.cached
        ]
        if not self.cached:
            lines.append("  (none: nothing to cache for this family and these settings)")
        lines.append("every step:")
        lines += [f"  {u.name}  ({u.reason})" for u in self.units if not u.cached]
        lines.append("  timesteps and the loss (drawn by the loss every step)")
        dropped = ", ".join(self.dropped_models) or "none"
        lines.append(f"models not loaded when training with --cache: {dropped}")
        lines.append(f"models loaded: {', '.join(self.kept_models) or 'none'}")
        return "\n".join(lines)


def _reads(unit: Any) -> list[tuple[str, str]]:
    """(dict, name) of every input the unit reads; branch inputs are read from both branches."""
    reads = [("shared", n) for n in unit.input_params]
    if unit.separate_cfg:
        reads += [("posi", n) for n in unit.input_params_posi.values()]
        reads += [("nega", n) for n in unit.input_params_nega.values()]
    return reads


def _writes(unit: Any) -> list[tuple[str, str]]:
    if unit.take_over:
        names = unit.output_params or (ALL,)
        return [(d, n) for d in ("shared", "posi", "nega") for n in names]
    kinds = ("posi", "nega") if unit.separate_cfg else ("shared",)
    return [(d, n) for d in kinds for n in unit.output_params]


def plan_units(
    units: Sequence[Any],
    model_names: Iterable[str],
    trained: Iterable[str] = (),
    keep: Iterable[str] = (),
) -> CachePlan:
    """The plan for ``units`` (in run order) of a pipeline with ``model_names``.

    ``trained``: models with trainable weights (full or LoRA); ``keep``: models never dropped
    (the denoisers)."""
    trained, keep = set(trained), set(keep)
    producer: dict[tuple[str, str], tuple[str, bool]] = {}  # (dict, name) -> (unit, per step)
    roles: list[UnitRole] = []
    for unit in units:
        models = tuple(unit.onload_model_names)
        role = UnitRole(unit.name, True, "", models)
        upstream = [
            (name, producer.get(read) or producer.get((read[0], ALL)))
            for name, read in ((r[1], r) for r in _reads(unit))
        ]
        per_step_input = next(((n, p[0]) for n, p in upstream if p is not None and not p[1]), None)
        if unit.take_over:
            role = UnitRole(
                unit.name, False, "take-over unit: sees and may change every input", models
            )
        elif not unit.cacheable:
            role = UnitRole(unit.name, False, "not cacheable", models)
        elif trained & set(models):
            role = UnitRole(
                unit.name,
                False,
                f"uses the trained {', '.join(sorted(trained & set(models)))}",
                models,
            )
        elif per_step_input is not None:
            role = UnitRole(
                unit.name,
                False,
                f"reads {per_step_input[0]} from {per_step_input[1]}, which runs every step",
                models,
            )
        for written in _writes(unit):
            producer[written] = (unit.name, role.cached)
        roles.append(role)
    names = tuple(model_names)
    cached_use = {m for r in roles if r.cached for m in r.models}
    step_use = {m for r in roles if not r.cached for m in r.models}
    dropped = tuple(n for n in names if n in cached_use and n not in step_use | trained | keep)
    kept = tuple(n for n in names if n not in dropped)
    return CachePlan(tuple(roles), dropped, kept, tuple(sorted(trained)))


def trained_models(pipe: Any) -> list[str]:
    """The pipeline models with trainable weights (after ``switch_pipe_to_training_mode``)."""
    import torch

    out = []
    for name in getattr(pipe, "model_names", ()):
        model = getattr(pipe, name, None)
        if isinstance(model, torch.nn.Module) and any(p.requires_grad for p in model.parameters()):
            out.append(name)
    return out


def plan_for(pipe: Any, keep: Iterable[str] = ()) -> CachePlan:
    """The plan of a pipeline in training mode; its family's denoisers (``ModelFamily.blocks``)
    and ``keep`` are never dropped."""
    family = getattr(pipe, "family", None)
    denoisers = set(getattr(family, "blocks", {}) or {}) | set(keep)
    return plan_units(pipe.units, pipe.model_names, trained_models(pipe), denoisers)
