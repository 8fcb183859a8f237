"""LoRA: inject with peft, export, merge, and continue training from a file.

Our in-memory form is peft's: modules get ``lora_A`` / ``lora_B`` sub-layers. Every file we
write goes through :func:`export_lora_tensors`, the one place that drops peft's ``.default``
and folds ``lora_alpha / rank`` into ``lora_B`` so the file means the same thing to every
loader, whatever alpha it assumes (diffusers and ComfyUI assume alpha = rank when a file has no
alphas). Reading the key forms other tools write lives in :mod:`.files`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import ConfigError, ModelFileError
from .files import bare_key, normalize_lora_state_dict, read_lora_file
from .variants import (
    MAGNITUDE,
    by_module,
    dora_weight,
    fold_scale,
    folded_part,
    is_adapter_key,
    lycoris_delta,
    part_of,
    peft_config,
)

__all__ = [
    "adapted_modules", "bare_key", "export_lora_tensors", "inject_lora", "load_lora_weights", "lora_metadata",
    "lora_scale", "lora_state_dict", "merge_lora", "normalize_lora_state_dict", "read_lora_file",
    "split_targets",
]  # fmt: skip


def split_targets(target_modules: str | Iterable[str]) -> list[str]:
    if isinstance(target_modules, str):
        return [t.strip() for t in target_modules.split(",") if t.strip()]
    return list(target_modules)


def _matches(name: str, target: str) -> bool:
    # peft's rule for a plain name: the whole module path or its last dotted parts
    return name == target or name.endswith("." + target)


def _short_name(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Each target must name some layer: peft is silent about a typo next to a valid name."""
    names = [n for n, m in model.named_modules() if n and not list(m.children())]
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if not missing:
        return
    # the names of linear layers, the most repeated first: the attention projections of
    # every block come before one-off layers
    linear = Counter(
        _short_name(n)
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2
    )
    short = sorted(linear, key=lambda k: (-linear[k], k))
    shown = ", ".join(short[:10]) + (f" ... ({len(short)} in all)" if len(short) > 10 else "")
    raise ConfigError(
        f"--lora-target-modules {','.join(missing)}: no layer of the model has that name; "
        f"linear layers are called {shown}"
    )


def inject_lora(
    model: torch.nn.Module,
    target_modules: str | Iterable[str],
    rank: int,
    alpha: float | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    dropout: float = 0.0,
    use_dora: bool = False,
    use_rslora: bool = False,
    lora_type: str = "lora",
) -> torch.nn.Module:
    """Add trainable adapter layers (the output is unchanged at first).

    ``lora_type`` is ``lora`` (with ``use_dora`` / ``use_rslora``), ``lokr`` or ``loha``
    (see :mod:`.variants`); ``dropout`` is LoRA's dropout, LoKr / LoHa's rank dropout.
    """
    from peft import inject_adapter_in_model

    targets = split_targets(target_modules)
    if not targets:
        raise ConfigError("LoRA needs at least one target module (--lora-target-modules)")
    _check_targets(model, targets)
    config = peft_config(lora_type, rank, alpha, targets, dropout, use_dora, use_rslora)
    model = inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        if is_adapter_key(name):
            param.data = param.data.to(dtype)
            param.requires_grad_(True)
    return model


def lora_scale(model: torch.nn.Module) -> float:
    """alpha / rank of the injected adapter (1.0 when alpha == rank)."""
    for module in model.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and "default" in scaling:
            return float(scaling["default"])
    return 1.0


def export_lora_tensors(
    tensors: Mapping[str, torch.Tensor], scale: float
) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors as written to a file: bare keys, CPU, contiguous, ``scale`` folded in.

    ``scale`` is that of the adapter (:func:`lora_scale`); it goes into ``lora_B`` (LoKr /
    LoHa: their first factor, plus the ``alpha`` ComfyUI reads; see :mod:`.variants`).
    Returns ``(tensors, is_lora)``; full weights pass through unscaled.
    """
    out = {bare_key(k): v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    is_lora = any(is_adapter_key(k) for k in out)
    if is_lora:
        out = fold_scale(out, scale)
    return out, is_lora


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of ``model`` as a file holds them (bare keys, scale folded)."""
    params = {n: p for n, p in model.named_parameters() if is_adapter_key(n)}
    return export_lora_tensors(params, lora_scale(model))[0]


def lora_metadata(model: torch.nn.Module) -> dict[str, Any]:
    """The adapter's settings: type, rank, alpha, targets as given to peft (``to_out.0``),
    DoRA / rsLoRA / dropout. The real names of the adapted modules come from the file's keys
    (:func:`adapted_modules`)."""
    ranks: set[int] = set()
    alphas: set[float] = set()
    targets: set[str] = set()
    config: Any = None
    for module in model.modules():
        configs = getattr(module, "peft_config", None)
        if isinstance(configs, dict) and "default" in configs:
            config = configs["default"]
            found = config.target_modules
            targets.update([found] if isinstance(found, str) else found or ())
        r = getattr(module, "r", None)
        if isinstance(r, dict) and "default" in r:
            ranks.add(r["default"])
            alpha = getattr(module, "lora_alpha", None) or getattr(module, "alpha", {})
            alphas.add(alpha["default"])
    if not ranks:
        return {}
    peft_type = str(getattr(config, "peft_type", "LORA")).rsplit(".", 1)[-1].lower()
    return {
        "lora_type": peft_type,
        "lora_rank": max(ranks),
        "lora_alpha": max(alphas),
        "lora_target_modules": sorted(targets),
        "use_dora": bool(getattr(config, "use_dora", False)),
        "use_rslora": bool(getattr(config, "use_rslora", False)),
        "lora_dropout": float(getattr(config, "lora_dropout", getattr(config, "rank_dropout", 0.0))),
    }


def adapted_modules(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The module names a LoRA file adapts (its keys without the adapter parts), sorted."""
    return sorted({part_of(k)[0] for k in tensors if is_adapter_key(k)})


def _param_name(key: str) -> tuple[str, str]:
    """(peft's in-model name, part) of a normalized file key."""
    module, part = part_of(key)
    if part in ("lora_A", "lora_B", MAGNITUDE):
        return f"{module}.{part}.default.weight", part
    return f"{module}.{part}.default", part


def load_lora_weights(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "the LoRA"
) -> None:
    """Load a normalized LoRA (any variant) into a model with the same adapter injected.

    ``source`` (the file) names the LoRA in errors: a key no injected layer has, or a shape
    that differs from the injected layer's (another ``--lora-rank``).
    """
    scale = lora_scale(model)
    params = dict(model.named_parameters())
    folded = {m: folded_part(parts) for m, parts in by_module(state_dict).items()}
    missing = []
    for key, value in state_dict.items():
        name, part = _param_name(key)
        if name not in params:
            missing.append(key)
            continue
        if params[name].shape != value.shape:
            raise ModelFileError(
                f"{source}: LoRA key {key} has shape {tuple(value.shape)}, the injected layer "
                f"{tuple(params[name].shape)}: give the --lora-rank the file was trained with"
            )
        if part == folded[part_of(key)[0]] and scale != 1.0:
            value = value / scale
        params[name].data.copy_(value.to(params[name].dtype))
    if missing:
        raise ModelFileError(
            f"{source}: {len(missing)} LoRA weights match no injected layer (first: {missing[0]}); "
            "are --lora-target-modules and --lora-type the same as when the LoRA was trained?"
        )


def merge_lora(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], scale: float = 1.0
) -> int:
    """Add ``scale`` times each module's update into the base weights; returns the modules
    changed. The update is ``B @ A`` (DoRA: the row norms then set to the magnitude), or the
    LoKr / LoHa reconstruction ComfyUI makes (:func:`.variants.lycoris_delta`)."""
    modules = dict(model.named_modules())
    count = 0
    for name, parts in by_module(state_dict).items():
        layer = modules.get(name)
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ModelFileError(
                f"LoRA module {name} is not in the model: is it for another model?"
            )
        if "lora_A" in parts:
            b, a = parts["lora_B"].float(), parts["lora_A"].float()
            delta = (b.flatten(1) @ a.flatten(1)).reshape(weight.shape)
        else:
            delta = lycoris_delta(parts, weight.shape)
        merged = weight.float() + delta.to(weight.device) * scale
        if MAGNITUDE in parts:  # DoRA at strength ``scale``: the update, then the norms
            magnitude = parts[MAGNITUDE].to(weight.device)
            merged = dora_weight(weight, delta.to(weight.device) * scale, magnitude)
        requantize = getattr(layer, "requantize", None)  # an fp8-compute layer (Fp8Linear)
        if requantize is not None:
            requantize(merged)  # its ``weight`` is a dequantized copy
        else:
            weight.data.copy_(merged.to(weight.dtype))
        count += 1
    return count
