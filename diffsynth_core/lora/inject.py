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

__all__ = [
    "bare_key", "export_lora_tensors", "inject_lora", "load_lora_weights", "lora_metadata",
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
) -> torch.nn.Module:
    """Add trainable LoRA layers (``lora_B`` zero, so the output is unchanged at first)."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = split_targets(target_modules)
    if not targets:
        raise ConfigError("LoRA needs at least one target module (--lora-target-modules)")
    _check_targets(model, targets)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, lora_dropout=0.0)
    model = inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        if "lora_" in name:
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
    """Tensors as written to a file: bare keys, CPU, contiguous, ``scale`` folded into lora_B.

    ``scale`` is ``alpha / rank`` of the adapter (:func:`lora_scale`). Returns ``(tensors,
    is_lora)``; full weights pass through unscaled.
    """
    out = {bare_key(k): v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    is_lora = any(".lora_A." in k for k in out)
    if is_lora and scale != 1.0:
        out = {k: v * scale if ".lora_B." in k else v for k, v in out.items()}
    return out, is_lora


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights of ``model`` as a file holds them (bare keys, alpha / rank folded)."""
    params = {n: p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    return export_lora_tensors(params, lora_scale(model))[0]


def lora_metadata(model: torch.nn.Module) -> dict[str, Any]:
    """Rank, alpha and target modules (as given to peft: ``to_out.0``) of ``model``'s LoRA."""
    ranks: set[int] = set()
    alphas: set[float] = set()
    targets: set[str] = set()
    layers: list[str] = []
    for name, module in model.named_modules():
        config = getattr(module, "peft_config", None)
        if isinstance(config, dict) and "default" in config:
            found = config["default"].target_modules
            targets.update([found] if isinstance(found, str) else found or ())
        r = getattr(module, "r", None)
        if isinstance(r, dict) and "default" in r:
            ranks.add(r["default"])
            alphas.add(module.lora_alpha["default"])
            layers.append(name)
    if not ranks:
        return {}
    # a LoRA put together without peft's injection has no config: name its layers in full
    return {
        "lora_rank": max(ranks),
        "lora_alpha": max(alphas),
        "target_modules": sorted(targets or layers),
    }


def load_lora_weights(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "the LoRA"
) -> None:
    """Load a normalized LoRA into a model with LoRA injected (continuing training).

    ``source`` (the file) names the LoRA in errors: a key no injected layer has, or a shape
    that differs from the injected layer's (another ``--lora-rank``).
    """
    scale = lora_scale(model)
    params = dict(model.named_parameters())
    missing = []
    for key, value in state_dict.items():
        module, _, kind = key.rpartition(".lora_")
        name = f"{module}.lora_{kind.split('.')[0]}.default.weight"
        if name not in params:
            missing.append(key)
            continue
        if params[name].shape != value.shape:
            raise ModelFileError(
                f"{source}: LoRA key {key} has shape {tuple(value.shape)}, the injected layer "
                f"{tuple(params[name].shape)}: give the --lora-rank the file was trained with"
            )
        if kind.startswith("B") and scale != 1.0:
            value = value / scale
        params[name].data.copy_(value.to(params[name].dtype))
    if missing:
        raise ModelFileError(
            f"{source}: {len(missing)} LoRA weights match no injected layer (first: {missing[0]}); "
            "is --lora-target-modules the same as when the LoRA was trained?"
        )


def merge_lora(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], scale: float = 1.0
) -> int:
    """Add ``scale * B @ A`` into the base weights (inference); returns the modules changed."""
    modules = dict(model.named_modules())
    count = 0
    for key, a in state_dict.items():
        if ".lora_A." not in key:
            continue
        name = key.rsplit(".lora_A.", 1)[0]
        layer = modules.get(name)
        if layer is None or not hasattr(layer, "weight"):
            raise ModelFileError(
                f"LoRA module {name} is not in the model: is it for another model?"
            )
        b = state_dict[f"{name}.lora_B.weight"]
        delta = (b.float().flatten(1) @ a.float().flatten(1)).reshape(layer.weight.shape) * scale
        layer.weight.data += delta.to(layer.weight.device, layer.weight.dtype)
        count += 1
    return count
