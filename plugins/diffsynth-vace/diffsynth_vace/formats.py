"""The LoRA layout of VACE families (the original Wan2.1 names) and the ``wan`` format.

diffusers renames the original Wan modules (``blocks.0.self_attn.q`` -> ``blocks.0.attn1.to_q``,
``vace_blocks.0.before_proj`` -> ``vace_blocks.0.proj_in`` ...). ComfyUI's Wan models, the
official Wan code and DiffSynth-Studio keep the original names, so a LoRA meant for them needs
them back: ``--lora-format wan`` (or ``comfyui``: the core's generic ``diffusion_model.`` + diffusers
names loads nowhere, ComfyUI reports every key "not loaded") writes ``diffusion_model.`` +
original names (the form ComfyUI reads, and diffusers' own Wan LoRA converter reads for the main
blocks). Reading accepts these, and kohya / musubi-tuner's ``lora_unet_`` underscore names. The rules below are
the inverse of diffusers' ``convert_wan_transformer_to_diffusers``; the tests check that this
function followed by diffusers' gives back every key of the model.

The families declare :data:`WAN_LAYOUT` (``lora_layout="diffsynth_vace.formats:WAN_LAYOUT"``):
the core's one ``comfyui`` format calls its :func:`convert` and reading calls
:func:`from_wan_lora`. :data:`WAN_FORMAT` (``--lora-format wan``) writes the same file for
any family of this layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from diffsynth_core import LoraFormat, LoraLayout, UnknownFormatError, family_layout

# (pattern, replacement), applied in order to each key
_RULES: tuple[tuple[str, str], ...] = (
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"\.scale_shift_table$", ".modulation"),
    (r"^(vace_blocks\.\d+)\.proj_in\.", r"\1.before_proj."),
    (r"^(vace_blocks\.\d+)\.proj_out\.", r"\1.after_proj."),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_out\.0\.", ".o."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.add_k_proj\.", ".k_img."),
    (r"\.add_v_proj\.", ".v_img."),
    (r"\.norm_added_k\.", ".norm_k_img."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    # the cross-attention norm: diffusers' norm2 is Wan's norm3 (the affine-free norms hold no
    # weights, so no key is ever called norm3 on the diffusers side)
    (r"\.norm2\.", ".norm3."),
)
_COMPILED = tuple((re.compile(p), r) for p, r in _RULES)

LORA_PREFIX = "diffusion_model."
# ``lora_unet_`` (kohya, musubi-tuner) or ``lora_unet__`` (OneTrainer) + Wan name, dots as "_"
_KOHYA = re.compile(r"^lora_unet__?")


def to_wan_key(key: str) -> str:
    """One diffusers key of ``WanVACETransformer3DModel`` as the original Wan name."""
    for pattern, replacement in _COMPILED:
        key = pattern.sub(replacement, key)
    return key


def to_wan_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {to_wan_key(k): v for k, v in state_dict.items()}


def convert(state_dict: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The ``wan`` and ``comfyui`` formats: Wan names; LoRA keys get ComfyUI's
    ``diffusion_model.`` prefix, full weights (a transformer's own state dict, as the original
    ``.safetensors``) stay bare."""
    renamed = to_wan_names(state_dict)
    if kind == "full":
        return renamed
    return {LORA_PREFIX + k: v for k, v in renamed.items()}


def from_wan_lora(
    state_dict: Mapping[str, Any], module_names: Iterable[str]
) -> dict[str, Any] | None:
    """A LoRA in the original Wan names -> the model's (diffusers') module names, or ``None``
    when no key is in a Wan form (the file is then left to the core's normalizer).

    Reads what ComfyUI reads for a Wan model: ``diffusion_model.`` + Wan names (``--lora-format
    wan`` / ``comfyui``), bare Wan names, and kohya / musubi-tuner's underscore form
    (``lora_unet_blocks_0_self_attn_q.lora_down.weight`` with ``.alpha``; OneTrainer writes
    ``lora_unet__``). The map is built from the model's own modules through :func:`to_wan_key`,
    so it is exactly the inverse of what we write.
    """
    wan_to_ours, flat_to_ours = {}, {}
    for name in module_names:
        if not name:
            continue
        wan = to_wan_key(name + ".weight")[: -len(".weight")]
        flat_to_ours[wan.replace(".", "_")] = name
        if wan != name:
            wan_to_ours[wan] = name
    renamed, hits = {}, 0
    for key, value in state_dict.items():
        bare = key[len(LORA_PREFIX) :] if key.startswith(LORA_PREFIX) else key
        module, sep, rest = _split_lora_key(bare)
        flat = _KOHYA.sub("", module) if _KOHYA.match(module) else None
        if module in wan_to_ours:
            bare, hits = wan_to_ours[module] + sep + rest, hits + 1
        elif flat is not None and flat in flat_to_ours:
            bare, hits = flat_to_ours[flat] + sep + rest, hits + 1
        renamed[bare] = value
    return renamed if hits else None


def _split_lora_key(key: str) -> tuple[str, str, str]:
    """``blocks.0.self_attn.q.lora_A.weight`` -> (``blocks.0.self_attn.q``, ``.``, ``lora_A.weight``)."""
    for marker in (".lora_", ".alpha"):
        if marker in key:
            module, _, rest = key.partition(marker)
            return module, ".", marker[1:] + rest
    return key, "", ""


WAN_LAYOUT = LoraLayout(comfyui_keys=convert, import_keys=from_wan_lora)


def export_wan(state_dict: dict[str, Any], family: Any, kind: str) -> dict[str, Any]:
    """``--lora-format wan``: what ``comfyui`` writes for a family of :data:`WAN_LAYOUT`."""
    from diffsynth_core import export_comfyui

    if family is None or family_layout(family) is not WAN_LAYOUT:
        name = "a hand-written module" if family is None else f"model family {family.name!r}"
        raise UnknownFormatError(
            f"--lora-format wan writes the original Wan names; {name} has no Wan layout "
            "(use diffusers, comfyui or peft)"
        )
    return export_comfyui(state_dict, family, kind)


WAN_FORMAT = LoraFormat(
    "wan",
    "the original Wan2.1 names under diffusion_model. (ComfyUI, the Wan code, DiffSynth-Studio)",
    export_wan,
)
