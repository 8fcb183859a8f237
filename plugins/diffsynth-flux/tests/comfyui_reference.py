"""ComfyUI's view of a Flux LoRA, restated for the tests (not imported by the plugin).

The facts come from ComfyUI: ``comfy/utils.py:flux_to_diffusers`` (which diffusers key is
which slice of which native key) and ``comfy/lora.py`` (``model_lora_keys_unet`` accepts the
native ``diffusion_model.<key>`` names and, for Flux, ``transformer.<diffusers name>``;
``load_lora`` reads ``<x>.lora_up.weight`` / ``<x>.lora_down.weight`` / ``<x>.alpha`` and
patches ``W += alpha / rank * up @ down``, 1.0 when there is no alpha). Written independently
of ``diffsynth_flux.comfyui`` so that the tests compare two statements of the same layout.
"""

from __future__ import annotations

from typing import Any

import torch

Target = tuple[str, int, int] | tuple[str, None, None] | tuple[str, str, None]


def flux_key_map(depth: int, single_depth: int, hidden: int) -> dict[str, Target]:
    """diffusers weight key -> (native key, row offset, rows) or (native key, None, None); the
    native key of ``norm_out`` is marked ``"swap"`` (its shift/scale halves are exchanged)."""
    out: dict[str, Any] = {}
    for i in range(depth):
        src, dst = f"transformer_blocks.{i}", f"diffusion_model.double_blocks.{i}"
        for j, x in enumerate("qkv"):
            out[f"{src}.attn.to_{x}.weight"] = (f"{dst}.img_attn.qkv.weight", j * hidden, hidden)
            out[f"{src}.attn.add_{x}_proj.weight"] = (
                f"{dst}.txt_attn.qkv.weight",
                j * hidden,
                hidden,
            )
        for a, b in (("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
                     ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                     ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                     ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2")):  # fmt: skip
            out[f"{src}.{a}.weight"] = (f"{dst}.{b}.weight", None, None)
    for i in range(single_depth):
        src, dst = f"single_transformer_blocks.{i}", f"diffusion_model.single_blocks.{i}"
        for j, x in enumerate("qkv"):
            out[f"{src}.attn.to_{x}.weight"] = (f"{dst}.linear1.weight", j * hidden, hidden)
        out[f"{src}.proj_mlp.weight"] = (f"{dst}.linear1.weight", 3 * hidden, 4 * hidden)
        out[f"{src}.norm.linear.weight"] = (f"{dst}.modulation.lin.weight", None, None)
        out[f"{src}.proj_out.weight"] = (f"{dst}.linear2.weight", None, None)
    for a, b in (("x_embedder", "img_in"), ("context_embedder", "txt_in"),
                 ("proj_out", "final_layer.linear"),
                 ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                 ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                 ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                 ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                 ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                 ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer")):  # fmt: skip
        out[f"{a}.weight"] = (f"diffusion_model.{b}.weight", None, None)
    out["norm_out.linear.weight"] = (
        "diffusion_model.final_layer.adaLN_modulation.1.weight",
        "swap",
        None,
    )
    return out


def _swap(t: torch.Tensor) -> torch.Tensor:
    shift, scale = t.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def to_native(
    weights: dict[str, torch.Tensor], key_map: dict[str, Target]
) -> dict[str, torch.Tensor]:
    """A diffusers Flux state dict (weights only) as ComfyUI holds it (fused, swapped)."""
    native: dict[str, torch.Tensor] = {}
    for key, (dst, offset, rows) in key_map.items():
        if key not in weights:
            continue
        w = weights[key]
        if isinstance(offset, int):
            total = native.get(dst, w.new_zeros(0, w.shape[1]))
            if total.shape[0] < offset + rows:
                total = torch.cat([total, w.new_zeros(offset + rows - total.shape[0], w.shape[1])])
            total[offset : offset + rows] = w
            native[dst] = total
        else:
            native[dst] = _swap(w) if offset == "swap" else w.clone()
    return native


def from_native(
    native: dict[str, torch.Tensor], key_map: dict[str, Target]
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_native` (the slices cut back out)."""
    out = {}
    for key, (dst, offset, rows) in key_map.items():
        if dst not in native:
            continue
        if isinstance(offset, int):
            out[key] = native[dst][offset : offset + rows]
        else:
            out[key] = _swap(native[dst]) if offset == "swap" else native[dst]
    return out


def apply_lora(native: dict[str, torch.Tensor], lora: dict[str, torch.Tensor]) -> list[str]:
    """Patch ``native`` in place as ComfyUI's loader does; returns LoRA keys it did not use."""
    used = set()
    for key in lora:
        if not key.endswith(".lora_up.weight"):
            continue
        x = key[: -len(".lora_up.weight")]
        up, down = lora[key], lora[f"{x}.lora_down.weight"]
        alpha = lora.get(f"{x}.alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        target = f"{x}.weight"
        native[target] = native[target] + scale * (up.float() @ down.float())
        used |= {key, f"{x}.lora_down.weight", f"{x}.alpha"}
    return sorted(set(lora) - used)


def apply_diffusers_lora(
    native: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], key_map: dict[str, Target]
) -> list[str]:
    """Patch ``native`` as ComfyUI does with a diffusers-named Flux LoRA
    (``transformer.<name>.lora_A/B.weight``, no alpha: scale 1): each update lands on its
    rows of the fused layer, swapped for ``norm_out``. Returns LoRA keys it did not use."""
    used = set()
    for key in lora:
        if not (key.startswith("transformer.") and key.endswith(".lora_B.weight")):
            continue
        x = key[len("transformer.") : -len(".lora_B.weight")]
        if f"{x}.weight" not in key_map:
            continue
        dst, offset, rows = key_map[f"{x}.weight"]
        diff = lora[key].float() @ lora[f"transformer.{x}.lora_A.weight"].float()
        if isinstance(offset, int):
            native[dst] = native[dst].clone()
            native[dst][offset : offset + rows] += diff
        else:
            native[dst] = native[dst] + (_swap(diff) if offset == "swap" else diff)
        used |= {key, f"transformer.{x}.lora_A.weight"}
    return sorted(set(lora) - used)
