"""LoRA layouts (what a family declares) and LoRA formats (registered objects).

A :class:`LoraLayout` says where each trained pipeline model goes in a file: the diffusers
component of each model (``{"dit": "transformer"}``, ControlNet's ``{"controlnet":
"controlnet", "dit": "transformer"}``), which model ComfyUI loads as its ``diffusion_model``,
and, where a family's ComfyUI names truly differ from diffusers' (Wan's original names, Flux's
fused qkv), the function that renames its keys and the one that reads them back. A family
names its layout (``ModelFamily.lora_layout``), so the formats never test a family's name.

A :class:`LoraFormat` is a ``--lora-format`` choice: ``export`` writes a trained state dict in
it; ``detect`` / ``import_`` optionally read files in it. The built-in ``diffusers``,
``comfyui``, ``peft`` and the read-only ``kohya`` are registered by the ``builtin-formats``
plugin through ``diffsynth_register_lora_formats``, the path a third-party format takes too.

Import-light: no torch (``diffsynth --help`` imports the registry, which imports this).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PluginError

COMFYUI_PREFIX = "diffusion_model."
_RESOLVED: dict[str, Any] = {}


def resolve(ref: Any, what: str) -> Any:
    """``"package.module:attr"`` -> the object (imported on first use); other values as given."""
    if not isinstance(ref, str):
        return ref
    if ref not in _RESOLVED:
        module_name, sep, attr = ref.partition(":")
        if not sep or not module_name or not attr:
            raise PluginError(f"{what} {ref!r}: expected 'package.module:attribute'")
        try:
            value: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"{what} {ref!r} cannot be imported: {exc}") from exc
        _RESOLVED[ref] = value
    return _RESOLVED[ref]


def call_with_known(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it accepts (as hooks are called)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


@dataclass(frozen=True)
class LoraLayout:
    """Where a family's trained models go in a LoRA / checkpoint file.

    Attributes:
        components: pipeline model -> diffusers component (the key prefix of the
            ``diffusers`` format). A model not listed uses the family's
            ``defaults.export_prefix`` if it is the trained model, else its own name.
        diffusion_model: the pipeline model ComfyUI loads as ``diffusion_model``; the others
            keep their diffusers component prefix in the ``comfyui`` format.
        comfyui_keys: ``fn(state_dict, kind) -> state_dict``: that model's keys as ComfyUI
            reads them (prefix included; ``kind`` is ``"lora"`` or ``"full"``). ``None``:
            diffusers' names, LoRA keys under ``diffusion_model.``, full weights bare.
        import_keys: ``fn(state_dict, module_names) -> state_dict | None`` reading a file in
            the family's own names back onto the model's modules (``None``: not in that form).
    """

    components: Mapping[str, str] = field(default_factory=dict)
    diffusion_model: str = "dit"
    comfyui_keys: Callable[[dict[str, Any], str], dict[str, Any]] | str | None = None
    import_keys: Callable[..., dict[str, Any] | None] | str | None = None

    def rename_for_comfyui(self, state_dict: dict[str, Any], kind: str) -> dict[str, Any]:
        fn = resolve(self.comfyui_keys, "lora_layout.comfyui_keys")
        if fn is not None:
            return fn(state_dict, kind)
        return with_prefix(COMFYUI_PREFIX, state_dict) if kind == "lora" else dict(state_dict)

    def import_state_dict(
        self, state_dict: dict[str, Any], module_names: list[str]
    ) -> dict[str, Any] | None:
        fn = resolve(self.import_keys, "lora_layout.import_keys")
        return None if fn is None else fn(state_dict, module_names)


DEFAULT_LAYOUT = LoraLayout()


@dataclass(frozen=True)
class LoraFormat:
    """One ``--lora-format`` choice, registered through ``diffsynth_register_lora_formats``.

    ``export(state_dict, family, kind)`` returns the file's keys (``kind`` is ``"lora"`` or
    ``"full"``, ``family`` a ModelFamily or ``None``); it raises a DiffSynthError for a family
    the format cannot write. ``detect(keys)`` says whether a file is in this form and
    ``import_(state_dict, family, module_names)`` renames it to forms the core normalizes;
    both ``None`` for a write-only format. ``export=None`` makes a read-only format.
    ``plugin`` is filled in by the manager.
    """

    name: str
    description: str
    export: Callable[[dict[str, Any], Any, str], dict[str, Any]] | None = None
    detect: Callable[[Iterable[str]], bool] | None = None
    import_: Callable[..., dict[str, Any] | None] | None = None
    plugin: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "plugin": self.plugin,
            "export": self.export is not None,
            "import": self.import_ is not None,
        }


# -- helpers every format shares (the family's layout applied to a trained state dict) ------


def family_layout(family: Any) -> LoraLayout:
    """The layout of ``family`` (the default one for ``None`` or a family that names none)."""
    return family.layout() if family is not None else DEFAULT_LAYOUT


def trained_model(family: Any) -> str:
    """The pipeline model whose prefix ``diffsynth train`` cut (``pipe.controlnet.``)."""
    if family is None:
        return "dit"
    prefix = family.defaults.remove_prefix_in_ckpt or ""
    if prefix.startswith("pipe.") and prefix.count(".") == 2:
        return prefix.split(".")[1]
    return family.defaults.lora_base_model


def component(family: Any, model: str) -> str:
    """The diffusers component (key prefix, no dot) of pipeline model ``model``."""
    layout = family_layout(family)
    if model in layout.components:
        return layout.components[model]
    if model == trained_model(family):
        return family.defaults.export_prefix if family is not None else "transformer"
    return model


def split_models(state_dict: Mapping[str, Any], family: Any) -> dict[str, dict[str, Any]]:
    """Keys by the pipeline model they belong to (``pipe.X.`` cut), in first-seen order.

    Keys without a ``pipe.`` prefix belong to the trained model (its prefix was cut).
    """
    default = trained_model(family)
    parts: dict[str, dict[str, Any]] = {}
    for key, value in state_dict.items():
        model, rest = default, key
        if key.startswith("pipe.") and key.count(".") >= 2:
            _, model, rest = key.split(".", 2)
        parts.setdefault(model, {})[rest] = value
    return parts


def with_prefix(prefix: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    dot = f"{prefix}." if prefix and not prefix.endswith(".") else prefix
    return {dot + key: value for key, value in state_dict.items()}


def read_prefixes(family: Any) -> tuple[str, ...]:
    """Prefixes a file for ``family`` may put before module names (cut when reading)."""
    layout = family_layout(family)
    models = {trained_model(family), layout.diffusion_model, *layout.components}
    names = {component(family, m) for m in models} | models
    found = {f"pipe.{m}." for m in models} | {f"{n}." for n in names if n}
    return tuple(sorted(found, key=len, reverse=True))
