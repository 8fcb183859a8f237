"""LoRA files in ComfyUI's Flux layout (``--lora-format comfyui``), and reading them back.

ComfyUI keeps the original BFL names of Flux (``double_blocks.N.img_attn.qkv``,
``single_blocks.N.linear1`` ...) where diffusers has its own (``transformer_blocks.N.attn
.to_q`` ...); ComfyUI's ``flux_to_diffusers`` map (comfy/utils.py) lists the pairs. Some
diffusers layers are slices of one ComfyUI layer: ``to_q``/``to_k``/``to_v`` are the three
thirds of ``img_attn.qkv`` (``add_*_proj`` of ``txt_attn.qkv``), and in a single block
``to_q, to_k, to_v, proj_mlp`` are the rows ``[0, D) [D, 2D) [2D, 3D) [3D, 7D)`` of
``linear1``. A LoRA on the slices is written as one LoRA on the fused layer: the ``down``
matrices stacked, the ``up`` matrices placed block-diagonally (rows of a slice without a LoRA
stay zero), so ``up @ down`` is exactly the slices' updates stacked. Keys are ComfyUI's
``diffusion_model.<name>.lora_up.weight`` / ``.lora_down.weight`` / ``.alpha`` (alpha = rank:
the scale is already folded in). ``norm_out.linear`` is ComfyUI's
``final_layer.adaLN_modulation.1`` with its (shift, scale) halves swapped.

The families declare :data:`FLUX_LAYOUT`: the core's one ``comfyui`` format calls
:func:`to_comfyui_lora` for LoRA files (full weights keep diffusers' bare keys), and reading a
LoRA for a Flux family calls :func:`from_comfyui_lora`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._core import LoraLayout, ModelFileError

PREFIX = "diffusion_model."

# diffusers suffix inside a double block -> (ComfyUI suffix, slice index or None)
DOUBLE = {
    "attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2), "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1), "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None), "attn.to_add_out": ("txt_attn.proj", None),
    "ff.net.0.proj": ("img_mlp.0", None), "ff.net.2": ("img_mlp.2", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None), "ff_context.net.2": ("txt_mlp.2", None),
    "norm1.linear": ("img_mod.lin", None), "norm1_context.linear": ("txt_mod.lin", None),
}  # fmt: skip
SINGLE = {
    "attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1), "attn.to_v": ("linear1", 2),
    "proj_mlp": ("linear1", 3), "proj_out": ("linear2", None), "norm.linear": ("modulation.lin", None),
}  # fmt: skip
TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
}  # fmt: skip
SWAPPED = "final_layer.adaLN_modulation.1"
# slice sizes of a fused layer, in units of the hidden size D (Flux's MLP ratio is 4)
SLICES = {"qkv": (1, 1, 1), "linear1": (1, 1, 1, 4)}

_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
_NATIVE = re.compile(r"^(double_blocks|single_blocks)\.(\d+)\.(.+)$")


def comfy_name(module: str) -> tuple[str, int | None] | None:
    """diffusers module path -> (ComfyUI module path, slice index), or None if unmapped."""
    match = _BLOCK.match(module)
    if match:
        kind, index, rest = match.groups()
        table, native = (
            (DOUBLE, "double_blocks") if kind == "transformer_blocks" else (SINGLE, "single_blocks")
        )
        if rest in table:
            suffix, part = table[rest]
            return f"{native}.{index}.{suffix}", part
        return None
    return (TOP[module], None) if module in TOP else None


def _reverse() -> dict[tuple[str, str, int | None], str]:
    out: dict[tuple[str, str, int | None], str] = {}
    for native, table in (("double_blocks", DOUBLE), ("single_blocks", SINGLE)):
        for diffusers, (suffix, part) in table.items():
            out[(native, suffix, part)] = diffusers
    return out


_REVERSE = _reverse()
_TOP_REVERSE = {v: k for k, v in TOP.items()}


def diffusers_name(native: str, part: int | None) -> str | None:
    """ComfyUI module path (and slice) -> diffusers module path, or None if unmapped."""
    match = _NATIVE.match(native)
    if match:
        kind, index, suffix = match.groups()
        rest = _REVERSE.get((kind, suffix, part))
        block = "transformer_blocks" if kind == "double_blocks" else "single_transformer_blocks"
        return f"{block}.{index}.{rest}" if rest else None
    return _TOP_REVERSE.get(native) if part is None else None


def _slice_kind(native: str) -> str | None:
    last = native.rsplit(".", 1)[-1]
    return last if last in SLICES else None


def _swap(t: Any) -> Any:
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _pairs(state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in state_dict.items():
        module, _, kind = key.rpartition(".lora_")
        pairs.setdefault(module, {})[kind.split(".")[0]] = value
    return pairs


def to_comfyui_lora(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Bare peft LoRA keys of a FluxTransformer2DModel (alpha folded) -> ComfyUI's Flux file."""

    out: dict[str, Any] = {}
    fused: dict[str, dict[int, tuple[Any, Any]]] = {}
    for module, ab in _pairs(state_dict).items():
        target = comfy_name(module)
        if target is None:  # no ComfyUI name: ComfyUI also reads diffusers' names
            out.update({f"transformer.{module}.lora_{k}.weight": v for k, v in ab.items()})
            continue
        native, part = target
        if part is not None:
            fused.setdefault(native, {})[part] = (ab["A"], ab["B"])
            continue
        up = _swap(ab["B"]) if native == SWAPPED else ab["B"]
        _write(out, native, ab["A"], up)
    for native, parts in fused.items():
        down, up = _fuse(native, parts)
        _write(out, native, down, up)
    return out


def _write(out: dict[str, Any], native: str, down: Any, up: Any) -> None:
    import torch

    out[f"{PREFIX}{native}.lora_down.weight"] = down.contiguous()
    out[f"{PREFIX}{native}.lora_up.weight"] = up.contiguous()
    out[f"{PREFIX}{native}.alpha"] = torch.tensor(float(down.shape[0]), dtype=down.dtype)


def _fuse(native: str, parts: dict[int, tuple[Any, Any]]) -> tuple[Any, Any]:
    """Stack the slices' LoRAs into one on the fused layer (block-diagonal ``up``)."""
    import torch

    units = SLICES[_slice_kind(native) or "qkv"]
    part, (_, b) = next(iter(parts.items()))
    hidden = b.shape[0] // units[part]
    offsets = [hidden * sum(units[:i]) for i in range(len(units))]
    ordered = sorted(parts.items())
    down = torch.cat([a for _, (a, _) in ordered], dim=0)
    up = b.new_zeros(hidden * sum(units), down.shape[0])
    col = 0
    for i, (a, b) in ordered:
        up[offsets[i] : offsets[i] + b.shape[0], col : col + a.shape[0]] = b
        col += a.shape[0]
    return down, up


# -- reading back ---------------------------------------------------------------------------


def from_comfyui_lora(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """A LoRA in ComfyUI's Flux names -> bare diffusers keys (alpha folded), or ``None`` when
    no key is in that form (the core's normaliser then reads the file). kohya's form of the
    same names (``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight``, what sd-scripts
    writes for Flux) is read too."""
    state_dict = {_from_kohya(k): v for k, v in state_dict.items()}
    native_keys = {k: v for k, v in state_dict.items() if _native_module(k) is not None}
    if not native_keys:
        return None
    out = {k: v for k, v in state_dict.items() if k not in native_keys}
    for native, parts in _native_pairs(native_keys).items():
        if "down" not in parts or "up" not in parts:
            raise ModelFileError(f"LoRA for {native} lacks its down or up matrix")
        down, up = parts["down"], parts["up"]
        if "alpha" in parts:
            up = up * (float(parts["alpha"]) / down.shape[0])
        if _slice_kind(native) is None:
            name = diffusers_name(native, None)
            up = _swap(up) if native == SWAPPED else up
            out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
            continue
        for i, (a, b) in _split(native, down, up).items():
            name = diffusers_name(native, i)
            out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = a, b
    return out


def _kohya_suffixes() -> dict[str, str]:
    suffixes = [s for s, _ in DOUBLE.values()] + [s for s, _ in SINGLE.values()]
    return {s.replace(".", "_"): s for s in suffixes}


_KOHYA = re.compile(
    r"^lora_unet_(double_blocks|single_blocks)_(\d+)_([A-Za-z0-9_]+?)(\.(?:lora_|alpha).*)$"
)
_KOHYA_SUFFIXES = _kohya_suffixes()
_KOHYA_TOP = {v.replace(".", "_"): v for v in TOP.values()}
_KOHYA_TOP_KEY = re.compile(r"^lora_unet_([A-Za-z0-9_]+?)(\.(?:lora_|alpha).*)$")


def _from_kohya(key: str) -> str:
    """``lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight`` -> the ComfyUI key; other
    keys unchanged."""
    match = _KOHYA.match(key)
    if match and match.group(3) in _KOHYA_SUFFIXES:
        kind, index, suffix, tail = match.groups()
        return f"{PREFIX}{kind}.{index}.{_KOHYA_SUFFIXES[suffix]}{tail}"
    match = _KOHYA_TOP_KEY.match(key)
    if match and match.group(1) in _KOHYA_TOP:
        return f"{PREFIX}{_KOHYA_TOP[match.group(1)]}{match.group(2)}"
    return key


def _native_module(key: str) -> str | None:
    if not key.startswith(PREFIX):
        return None
    body = key[len(PREFIX) :]
    module = (
        body.rsplit(".alpha", 1)[0] if body.endswith(".alpha") else body.rpartition(".lora_")[0]
    )
    known = diffusers_name(module, None) or (_slice_kind(module) and diffusers_name(module, 0))
    return module if known else None


def _native_pairs(state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    names = {"down": "down", "up": "up", "A": "down", "B": "up"}
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in state_dict.items():
        module = _native_module(key)
        assert module is not None
        if key.endswith(".alpha"):
            pairs.setdefault(module, {})["alpha"] = value
            continue
        kind = key.rpartition(".lora_")[2].split(".")[0]
        if kind not in names:  # LoCon's lora_mid ...: not a plain LoRA
            raise ModelFileError(f"{key}: only plain LoRA files (down/up or A/B) are supported")
        pairs.setdefault(module, {})[names[kind]] = value
    return pairs


def _split(native: str, down: Any, up: Any) -> dict[int, tuple[Any, Any]]:
    """The slices' LoRAs of a fused one: exact factors when ``up`` is block-diagonal (as we
    write it), else each slice gets the whole ``down`` and its rows of ``up`` (the same update)."""
    units = SLICES[_slice_kind(native) or "qkv"]
    hidden = up.shape[0] // sum(units)
    rows = [(hidden * sum(units[:i]), hidden * units[i]) for i in range(len(units))]
    support = [up[o : o + n].abs().sum(dim=0).nonzero().flatten() for o, n in rows]
    disjoint = sum(len(s) for s in support) == len({int(c) for s in support for c in s})
    out = {}
    for i, ((o, n), cols) in enumerate(zip(rows, support, strict=True)):
        if not disjoint:
            out[i] = (down, up[o : o + n])
        elif len(cols):
            out[i] = (down[cols], up[o : o + n][:, cols])
    return out


def _comfyui_keys(state_dict: dict[str, Any], kind: str) -> dict[str, Any]:
    return to_comfyui_lora(state_dict) if kind == "lora" else dict(state_dict)


def _import_keys(state_dict: dict[str, Any], module_names: list[str]) -> dict[str, Any] | None:
    return from_comfyui_lora(state_dict)


FLUX_LAYOUT = LoraLayout(comfyui_keys=_comfyui_keys, import_keys=_import_keys)
