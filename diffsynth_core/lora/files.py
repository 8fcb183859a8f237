"""Reading LoRA files: every key form other tools write, mapped to our bare peft form.

Files come back in many forms; :func:`normalize_lora_state_dict` maps each to the bare form
(``blocks.0.attn.to_q.lora_A.weight``) with the strength folded into ``lora_B``:

* DiffSynth-Studio: ``...to_q.lora_A.default.weight`` (no prefix)
* diffusers: the component prefix; ComfyUI: ``diffusion_model.`` prefix
* ``lora_down`` / ``lora_up`` with an ``.alpha`` tensor per module (ComfyUI, kohya, musubi)
* kohya: ``lora_unet_blocks_0_attn_to_q.lora_down.weight``
* diffusers' ``save_lora_weights`` files carry alpha as metadata (``lora_adapter_metadata``)

No model's prefix is named here: the prefixes of a family's models come from its
:class:`~diffsynth_core.lora.formats.LoraLayout` (:func:`~diffsynth_core.lora.formats.read_prefixes`).
:func:`read_lora_file` adds what a file on disk needs: refusing NaN/inf, the metadata alpha,
the family's own names (its layout's ``import_keys``; the ``diffsynth_import_lora`` hook
overrides), the registered formats' ``detect`` / ``import_`` (kohya), and a shape check
against the model, so a LoRA for another model is one clear error naming the file, the key
and both shapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError
from .variants import LYCORIS_PARTS, MAGNITUDE, by_module, lycoris_to_scale_one, part_of

# what tools put before any model's module names (peft's wrapper, ComfyUI, generic ones)
_GENERIC_PREFIXES = ("base_model.model.", "diffusion_model.", "model.", "unet.")
# kohya / musubi ``lora_unet_``; OneTrainer writes ``lora_unet__``
_KOHYA = re.compile(r"^lora_(?:unet_?|te\d?|transformer)_")
_ADAPTER = re.compile(r"\.(lora_[AB]|lora_down|lora_up)\.default\.")
# DoRA's magnitude and the LoKr / LoHa parts: peft's file keys have no ``.weight``
_PARAMETER = re.compile(r"\.(lora_magnitude_vector|lokr_\w+|hada_\w+)\.default(?:\.weight)?$")


def bare_key(key: str) -> str:
    """peft's adapter name dropped: ``to_q.lora_A.default.weight`` -> ``to_q.lora_A.weight``,
    ``to_q.lokr_w1.default`` -> ``to_q.lokr_w1``, DoRA's ``...lora_magnitude_vector``."""
    return _PARAMETER.sub(r".\1", _ADAPTER.sub(r".\1.", key))


def _strip_prefix(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _kohya_module(key: str, module_names: dict[str, str]) -> str:
    flat = _KOHYA.sub("", key)
    if flat not in module_names:
        raise ModelFileError(f"LoRA key {key} matches no module of the model")
    return module_names[flat]


def _split(key: str) -> tuple[str, str]:
    """(module, kind): kind is ``A.weight``, ``down.weight``, ``alpha``, ``lokr_w1`` ..."""
    module, part = part_of(key)
    if part in LYCORIS_PARTS or part == MAGNITUDE:
        return module, part
    if ".lora_" in key:
        module, _, kind = key.rpartition(".lora_")
        return module, kind
    module, _, kind = key.rpartition(".")
    return module, kind


_PARTS = {"A.weight": "A", "down.weight": "A", "B.weight": "B", "up.weight": "B"}


def normalize_lora_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    module_names: Iterable[str] = (),
    alpha: float | None = None,
    family: Any = None,
) -> dict[str, torch.Tensor]:
    """Any supported LoRA key form -> bare peft keys, with alphas folded into ``lora_B``.

    ``alpha`` is the strength of modules without an ``.alpha`` tensor (diffusers' metadata);
    without either, alpha = rank (scale 1), as every loader assumes. ``family`` (or the
    default layout) says which model prefixes to cut. DoRA's ``lora_magnitude_vector`` is
    kept; LoKr / LoHa parts keep their names with ComfyUI's ``alpha / dim`` folded in.
    """
    from .formats import read_prefixes

    prefixes = (*read_prefixes(family), *_GENERIC_PREFIXES)
    flat_names = {n.replace(".", "_"): n for n in module_names}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        module, kind = _split(bare_key(key))
        if _KOHYA.match(module):
            module = _kohya_module(module, flat_names)
        module = _strip_prefix(module, prefixes)
        part = _PARTS.get(kind, kind)
        if part in ("A", "B", "alpha", MAGNITUDE) or part in LYCORIS_PARTS:
            pairs.setdefault(module, {})[part] = value
    if not pairs:
        raise ModelFileError(
            "the file holds no LoRA weights (no lora_A/lora_B, lora_down/lora_up, lokr_ or "
            "hada_ keys)"
        )
    out: dict[str, torch.Tensor] = {}
    for module, parts in pairs.items():
        out.update(_normalized_module(module, parts, alpha))
    return out


def _normalized_module(
    module: str, parts: dict[str, torch.Tensor], alpha: float | None
) -> dict[str, torch.Tensor]:
    if any(p in LYCORIS_PARTS for p in parts):
        return {f"{module}.{k}": v for k, v in lycoris_to_scale_one(parts).items()}
    if "A" not in parts or "B" not in parts:
        raise ModelFileError(f"LoRA for {module} lacks its A or B matrix")
    module_alpha = float(parts["alpha"]) if "alpha" in parts else alpha
    b = parts["B"]
    if module_alpha is not None:
        b = b * (module_alpha / parts["A"].shape[0])
    out = {f"{module}.lora_A.weight": parts["A"], f"{module}.lora_B.weight": b}
    if MAGNITUDE in parts:
        out[f"{module}.{MAGNITUDE}"] = parts[MAGNITUDE]
    return out


def check_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """Refuse NaN/inf: merged, one bad tensor turns every output black."""
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not torch.isfinite(value).all():
                raise ModelFileError(
                    f"{source}: LoRA tensor {key} holds NaN/inf; the file is broken "
                    "(use an earlier checkpoint or retrain with a lower learning rate)"
                )


def metadata_alpha(path: Any) -> float | None:
    """The ``lora_alpha`` diffusers' ``save_lora_weights`` stores as safetensors metadata.

    Its B matrices are not scaled: diffusers multiplies by ``lora_alpha / r`` when loading, so
    we must too. (Our own files fold alpha into B and write no such entry.)
    """
    files = [Path(path)] if not isinstance(path, list) else [Path(p) for p in path]
    if len(files) != 1 or files[0].suffix != ".safetensors" or not files[0].is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(files[0]), "pt") as handle:
        raw = (handle.metadata() or {}).get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    # pipeline files prefix each entry with the component ("<component>.lora_alpha")
    alphas = {v for k, v in config.items() if k.rsplit(".", 1)[-1] == "lora_alpha"}
    return float(alphas.pop()) if len(alphas) == 1 else None


def check_shapes(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    """Each LoRA pair must fit its module of ``model``: one error naming key and both shapes."""
    modules = dict(model.named_modules())
    for key, a in state_dict.items():
        if ".lora_A." not in key:
            continue
        name = key.rsplit(".lora_A.", 1)[0]
        b_key = f"{name}.lora_B.weight"
        b = state_dict[b_key]
        layer = modules.get(name)
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ModelFileError(
                f"{source}: LoRA module {name} is not in the model: is it for another model?"
            )
        if a.shape[0] != b.shape[1]:
            raise ModelFileError(
                f"{source}: {key} has shape {tuple(a.shape)} and {b_key} {tuple(b.shape)}: "
                "their ranks differ, the file is broken"
            )
        if b.shape[0] * a[0].numel() != weight.numel() or b.shape[0] != weight.shape[0]:
            raise ModelFileError(
                f"{source}: LoRA {key} {tuple(a.shape)} / {b_key} {tuple(b.shape)} do not fit "
                f"{name}.weight {tuple(weight.shape)}: is the LoRA for another model?"
            )
    _check_lycoris_shapes(modules, state_dict, source)


def _check_lycoris_shapes(
    modules: Mapping[str, torch.nn.Module], state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    from .variants import lycoris_delta

    for name, parts in by_module(state_dict).items():
        if not any(p in LYCORIS_PARTS for p in parts):
            continue
        weight = getattr(modules.get(name), "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ModelFileError(
                f"{source}: LoRA module {name} is not in the model: is it for another model?"
            )
        try:
            lycoris_delta(parts, weight.shape)
        except (RuntimeError, KeyError) as exc:
            raise ModelFileError(
                f"{source}: the LoKr / LoHa parts of {name} ({', '.join(sorted(parts))}) do not "
                f"make a {tuple(weight.shape)} update: is the LoRA for another model? ({exc})"
            ) from exc


def read_lora_file(
    path: Any, model: torch.nn.Module, allow_pickle: bool = False, family: Any = None
) -> dict[str, torch.Tensor]:
    """Read a LoRA file in any supported form, normalized and checked against ``model``.

    Renamed first by the ``diffsynth_import_lora`` hook (an override), else the family's
    layout (its own names), else the first registered format that detects the keys.
    """
    from ..loading import load_state_dict
    from ..plugins import get_plugin_manager
    from .formats import family_layout

    raw = load_state_dict(path, allow_pickle=allow_pickle)
    check_finite(raw, str(path))
    manager = get_plugin_manager()
    names = [n for n, _ in model.named_modules()]
    try:
        imported = manager.hook.diffsynth_import_lora(state_dict=raw, family=family, model=model)
        if imported is None:
            imported = family_layout(family).import_state_dict(raw, names)
        if imported is None:
            imported = manager.import_lora(raw, family, names)
        state = normalize_lora_state_dict(
            raw if imported is None else imported, names, metadata_alpha(path), family
        )
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    check_shapes(model, state, str(path))
    return state
