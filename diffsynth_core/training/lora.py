"""LoRA: inject with peft, export, and read back the key forms other tools write.

Our in-memory form is peft's: modules get ``lora_A`` / ``lora_B`` sub-layers, and
``lora_state_dict`` gives bare keys (``transformer_blocks.0.attn.to_q.lora_A.weight``). On
export ``lora_alpha / rank`` is folded into ``lora_B`` so the file means the same thing to every
loader, whatever alpha it assumes (diffusers assumes alpha = rank when a file has no alphas).

Files come back in many forms; :func:`normalize_lora_state_dict` maps each to the bare form:

* DiffSynth-Studio: ``...to_q.lora_A.default.weight`` (no prefix)
* diffusers: ``transformer.`` prefix; ComfyUI: ``diffusion_model.`` prefix
* ``lora_down`` / ``lora_up`` with ``.alpha`` (ComfyUI, kohya)
* kohya: ``lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight``
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from ..errors import ModelFileError

_PREFIXES = (
    "base_model.model.",
    "diffusion_model.",
    "transformer.",
    "pipe.dit.",
    "pipe.controlnet.",
    "controlnet.",
    "dit.",
    "model.",
    "unet.",
)
_KOHYA = re.compile(r"^lora_(?:unet|te\d?|transformer)_")


def split_targets(target_modules: str | Iterable[str]) -> list[str]:
    if isinstance(target_modules, str):
        return [t.strip() for t in target_modules.split(",") if t.strip()]
    return list(target_modules)


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
        raise ValueError("LoRA needs at least one target module (--lora-target-modules)")
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


def bare_key(key: str) -> str:
    return key.replace(".default.", ".")


def lora_state_dict(model: torch.nn.Module, fold_alpha: bool = True) -> dict[str, torch.Tensor]:
    """The LoRA weights with bare peft keys; alpha / rank folded into ``lora_B``."""
    scale = lora_scale(model) if fold_alpha else 1.0
    out = {}
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            value = param.detach()
            if ".lora_B." in name and scale != 1.0:
                value = value * scale
            out[bare_key(name)] = value
    return out


def _strip_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _kohya_module(key: str, module_names: dict[str, str]) -> str:
    flat = _KOHYA.sub("", key)
    if flat not in module_names:
        raise ModelFileError(f"LoRA key lora_..._{flat} matches no module of the model")
    return module_names[flat]


def normalize_lora_state_dict(
    state_dict: dict[str, torch.Tensor], module_names: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """Any supported LoRA key form -> bare peft keys, with alphas folded into ``lora_B``."""
    flat_names = {n.replace(".", "_"): n for n in module_names}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        key = bare_key(key)
        module, _, kind = key.rpartition(".lora_") if ".lora_" in key else key.rpartition(".")
        if _KOHYA.match(module):
            module = _kohya_module(module, flat_names)
        module = _strip_prefix(module)
        if kind in ("A.weight", "down.weight"):
            pairs.setdefault(module, {})["A"] = value
        elif kind in ("B.weight", "up.weight"):
            pairs.setdefault(module, {})["B"] = value
        elif kind == "alpha":
            pairs.setdefault(module, {})["alpha"] = value
    if not pairs:
        raise ModelFileError(
            "the file holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up keys)"
        )
    out = {}
    for module, parts in pairs.items():
        if "A" not in parts or "B" not in parts:
            raise ModelFileError(f"LoRA for {module} lacks its A or B matrix")
        b = parts["B"]
        if "alpha" in parts:
            b = b * (float(parts["alpha"]) / parts["A"].shape[0])
        out[f"{module}.lora_A.weight"] = parts["A"]
        out[f"{module}.lora_B.weight"] = b
    return out


def lora_targets_and_rank(state_dict: dict[str, torch.Tensor]) -> tuple[list[str], int]:
    """Module names (leaf parts, as peft targets) and rank of a normalized LoRA."""
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in state_dict})
    rank = next(v.shape[0] for k, v in state_dict.items() if ".lora_A." in k)
    return modules, rank


def load_lora_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a normalized LoRA into a model with LoRA injected (continuing training)."""
    scale = lora_scale(model)
    params = dict(model.named_parameters())
    missing = []
    for key, value in state_dict.items():
        module, _, kind = key.rpartition(".lora_")
        name = f"{module}.lora_{kind.split('.')[0]}.default.weight"
        if name not in params:
            missing.append(key)
            continue
        if kind.startswith("B") and scale != 1.0:
            value = value / scale
        params[name].data.copy_(value.to(params[name].dtype))
    if missing:
        raise ModelFileError(
            f"{len(missing)} LoRA weights match no injected layer (first: {missing[0]}); "
            "is --lora-target-modules the same as when the LoRA was trained?"
        )


def merge_lora(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], scale: float = 1.0
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
        delta = (b.float() @ a.float()).reshape(layer.weight.shape) * scale
        layer.weight.data += delta.to(layer.weight.device, layer.weight.dtype)
        count += 1
    return count


def read_lora_file(
    path: Any, model: torch.nn.Module, allow_pickle: bool = False, family: Any = None
) -> dict[str, torch.Tensor]:
    """Read a LoRA file in any supported form, normalized against ``model``'s module names.

    Family-specific forms are renamed first by the ``diffsynth_import_lora`` hook.
    """
    from ..loading import load_state_dict
    from ..plugins import get_plugin_manager

    raw = load_state_dict(path, allow_pickle=allow_pickle)
    imported = get_plugin_manager().hook.diffsynth_import_lora(
        state_dict=raw, family=family, model=model
    )
    return normalize_lora_state_dict(
        raw if imported is None else imported, (n for n, _ in model.named_modules())
    )
