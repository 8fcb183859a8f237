"""LoRA variants: DoRA, rsLoRA, LoKr and LoHa (all injected by peft) and their file forms.

peft names the trainable tensors of each variant; a file drops peft's ``.default`` and folds
the adapter's scale (``alpha / rank``, ``alpha / sqrt(rank)`` under rsLoRA) into one factor,
so every loader reads it at scale 1:

* LoRA, rsLoRA: ``lora_A`` / ``lora_B`` (scale in ``lora_B``), what diffusers loads;
* DoRA: the same plus ``lora_magnitude_vector`` (peft's file key, which diffusers' loader
  reads to turn DoRA on); the scale goes into ``lora_B`` too, since DoRA normalises
  ``W + scale * B A`` row by row;
* LoKr: ``lokr_w1`` / ``lokr_w2`` or their ``_a`` / ``_b`` factors, LoHa: ``hada_w1_a`` ...
  (the LyCORIS names ComfyUI reads), the scale in ``lokr_w1`` (or ``lokr_w1_a``) /
  ``hada_w1_a``, and an ``alpha`` tensor equal to the rank ComfyUI divides by, so its
  ``alpha / dim`` is 1 (``comfy/weight_adapter/lokr.py``, ``loha.py``).

:func:`lycoris_delta` is ComfyUI's reconstruction of a LoKr / LoHa weight update; the reader
(:mod:`.files`) and the merge (:func:`.inject.merge_lora`) use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

LORA_TYPES = ("lora", "lokr", "loha")
MAGNITUDE = "lora_magnitude_vector"
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LYCORIS_PARTS = LOKR_PARTS + LOHA_PARTS
# the factor of each variant that carries the folded scale (first one present)
_FOLDED = ("lora_B", "lokr_w1", "lokr_w1_a", "hada_w1_a")


def peft_config(
    lora_type: str,
    rank: int,
    alpha: float | None,
    targets: list[str],
    dropout: float = 0.0,
    use_dora: bool = False,
    use_rslora: bool = False,
) -> Any:
    """The peft config of ``lora_type``; ``dropout`` is LoRA's dropout or LyCORIS' rank dropout."""
    from ..errors import ConfigError

    alpha = alpha or rank
    if lora_type == "lora":
        from peft import LoraConfig

        return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout,
                          use_dora=use_dora, use_rslora=use_rslora)  # fmt: skip
    if use_dora or use_rslora:
        raise ConfigError(
            f"--use-dora and --use-rslora are LoRA options; --lora-type {lora_type} has neither"
        )
    if lora_type == "lokr":
        from peft import LoKrConfig

        return LoKrConfig(r=rank, alpha=alpha, target_modules=targets, rank_dropout=dropout)
    if lora_type == "loha":
        from peft import LoHaConfig

        return LoHaConfig(r=rank, alpha=alpha, target_modules=targets, rank_dropout=dropout)
    raise ConfigError(f"--lora-type must be one of {', '.join(LORA_TYPES)}, not {lora_type!r}")


def part_of(key: str) -> tuple[str, str]:
    """``(module, part)`` of a file key: ``a.to_q.lokr_w1`` -> ``("a.to_q", "lokr_w1")``,
    ``a.to_q.lora_B.weight`` -> ``("a.to_q", "lora_B")``; part ``""`` for no adapter key."""
    parts = key.split(".")
    for i in range(len(parts) - 1, -1, -1):
        name = parts[i]
        if name in LYCORIS_PARTS or name in ("lora_A", "lora_B", MAGNITUDE, "alpha"):
            return ".".join(parts[:i]), name
    return key, ""


def is_adapter_key(key: str) -> bool:
    """A trainable adapter tensor (peft's in-model name or a file key), not an ``alpha``."""
    return part_of(key)[1] not in ("", "alpha")


def is_lycoris(keys: Iterable[str]) -> bool:
    return any(part_of(k)[1] in LYCORIS_PARTS for k in keys)


def folded_part(parts: Iterable[str]) -> str | None:
    """Which of a module's parts carries the folded scale."""
    present = set(parts)
    return next((p for p in _FOLDED if p in present), None)


def by_module(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {part: tensor}}`` of the adapter tensors (and alphas) of a file."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, part = part_of(key)
        if part:
            out.setdefault(module, {})[part] = value
    return out


def _key(module: str, part: str) -> str:
    return f"{module}.{part}.weight" if part in ("lora_A", "lora_B") else f"{module}.{part}"


def fold_scale(tensors: Mapping[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Bare file tensors with ``scale`` multiplied into each module's folded factor, and the
    ``alpha`` of each LoKr / LoHa module that makes ComfyUI's ``alpha / dim`` 1."""
    out = dict(tensors)
    for module, parts in by_module(tensors).items():
        folded = folded_part(parts)
        if folded is not None and scale != 1.0:
            out[_key(module, folded)] = parts[folded] * scale
        dim = comfy_dim(parts)
        if dim is not None:
            out[f"{module}.alpha"] = torch.tensor(float(dim))
    return out


def comfy_dim(parts: Mapping[str, torch.Tensor]) -> int | None:
    """The rank ComfyUI divides ``alpha`` by (None: it ignores alpha, scale 1)."""
    if "hada_w1_b" in parts:
        return int(parts["hada_w1_b"].shape[0])
    if "lokr_w2_b" in parts:
        return int(parts["lokr_w2_b"].shape[0])
    if "lokr_w1_b" in parts:
        return int(parts["lokr_w1_b"].shape[0])
    return None


def comfy_scale(parts: Mapping[str, torch.Tensor]) -> float:
    """ComfyUI's ``alpha / dim`` of a LoKr / LoHa module (1 without alpha or dim)."""
    dim = comfy_dim(parts)
    if "alpha" not in parts or dim is None:
        return 1.0
    return float(parts["alpha"]) / dim


def lycoris_delta(parts: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """ComfyUI's weight update of one LoKr / LoHa module (``alpha / dim`` applied), in fp32."""
    p = {k: v.float() for k, v in parts.items() if k != "alpha"}
    if "hada_w1_a" in p:
        delta = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
    else:
        w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
        w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"]
        delta = torch.kron(w1, w2)
    return delta.reshape(shape) * comfy_scale(parts)


def lycoris_to_scale_one(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoKr / LoHa module's parts with ComfyUI's ``alpha / dim`` folded in, alpha dropped."""
    scale = comfy_scale(parts)
    out = {k: v for k, v in parts.items() if k != "alpha"}
    folded = folded_part(out)
    if folded is not None and scale != 1.0:
        out[folded] = out[folded] * scale
    return out


def dora_weight(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """peft's merged DoRA weight: ``W + delta`` with each output row's norm set to ``magnitude``."""
    combined = weight.float() + delta.float()
    norm = torch.linalg.norm(combined.flatten(1), dim=1)
    return combined * (magnitude.float() / norm).view(-1, *[1] * (combined.dim() - 1))

