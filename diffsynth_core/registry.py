"""Model families and the name -> family registry.

A :class:`ModelFamily` is what a plugin contributes through ``diffsynth_register_models``: a
name, the default weight files per component, the default training settings, a builder for
an offline tiny preset, and its behaviour: its loader, its units and its LoRA layout. These
are named as ``"package.module:attribute"`` and imported on first use, so registering a
family (``diffsynth --help``) imports no torch, and no hook has to test a family's name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import DuplicateFamilyError, PluginError, UnknownModelError
from .lora.formats import DEFAULT_LAYOUT, LoraLayout, call_with_known, resolve

OPTION_KINDS = ("str", "int", "float", "bool", "path", "image", "images", "video")

# The first-party families and the distribution that installs each, for the hint of a
# missing family (a guess like `diffsynth-<family>` names packages that do not exist).
# tests/platform/test_registry_hints.py checks it against the plugins under plugins/.
FIRST_PARTY_FAMILIES = {
    "qwen-image": "diffsynth-qwen-image",
    "qwen-image-edit": "diffsynth-qwen-image",
    "qwen-image-edit-plus": "diffsynth-qwen-image",
    "qwen-image-controlnet": "diffsynth-controlnet",
    "wan-vace": "diffsynth-vace",
    "wan-vace-14b": "diffsynth-vace",
    "flux": "diffsynth-flux",
    "flux-dev": "diffsynth-flux",
    "flux-schnell": "diffsynth-flux",
}
OPTION_COMMANDS = ("train", "generate", "both")


@dataclass(frozen=True)
class ComponentFiles:
    """Where one component's files live in the official repository.

    ``model_id`` is a hub id (``Qwen/Qwen-Image``), ``origin_file_pattern`` a glob inside it
    (``transformer/diffusion_pytorch_model*.safetensors``; a trailing ``/`` means the whole
    folder, as for tokenizers).
    """

    model_id: str
    origin_file_pattern: str


@dataclass(frozen=True)
class FamilyOption:
    """A family-specific flag for ``diffsynth train`` or ``diffsynth generate``.

    ``name`` is the keyword the pipeline receives (``control_image``); the flag is the same
    name with dashes (``--control-image``). ``kind`` says how the value is parsed: ``str``,
    ``int``, ``float``, ``bool``, ``path`` (must exist), ``image`` (loaded as a PIL image),
    ``images`` (comma list of images; the flag may be repeated) or ``video`` (a video file or folder of frames).
    """

    name: str
    kind: str = "str"
    default: Any = None
    help: str = ""
    command: str = "both"  # "train", "generate" or "both"

    def __post_init__(self) -> None:
        # Checked here, at registration, so a typo breaks the plugin that made it and not a
        # later training run.
        if self.kind not in OPTION_KINDS:
            raise PluginError(
                f"option {self.name!r}: kind {self.kind!r} is not one of {', '.join(OPTION_KINDS)}"
            )
        if self.command not in OPTION_COMMANDS:
            raise PluginError(
                f"option {self.name!r}: command {self.command!r} is not one of "
                f"{', '.join(OPTION_COMMANDS)}"
            )

    @property
    def flag(self) -> str:
        """The command-line flag: ``control_image`` -> ``--control-image``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class TrainingDefaults:
    """A family's default training settings; every field can be overridden by a flag."""

    lora_base_model: str = "dit"
    trainable_models: str | None = None  # full training by default (e.g. a new ControlNet)
    lora_target_modules: str = ""
    lora_rank: int = 32
    learning_rate: float = 1e-4
    height: int | None = None
    width: int | None = None
    max_pixels: int = 1024 * 1024
    division_factor: int = 16
    num_frames: int | None = None
    data_file_keys: tuple[str, ...] = ("image",)
    required_columns: tuple[str, ...] = ("image", "prompt")
    remove_prefix_in_ckpt: str = "pipe.dit."
    export_prefix: str = "transformer"
    gradient_checkpointing: bool = True
    sample_height: int = 512
    sample_width: int = 512


@dataclass(frozen=True)
class ModelFamily:
    """A model family a plugin provides.

    Attributes:
        name: the ``--model`` name (``qwen-image``).
        description: one line for ``diffsynth models``.
        model_files: default files per component (``dit``, ``vae``, ``text_encoder``,
            ``tokenizer`` ...), used when the user gives no ``--model-path``.
        defaults: default training settings.
        build_tiny: ``build_tiny(folder)`` writes a tiny model of the same classes, in the
            official repository layout, into ``folder`` without any download.
        options: family-specific flags of ``train`` / ``generate``.
        base_family: the family whose pipeline this one extends (a ControlNet on its DiT).
        loader: ``"package.module:function"`` (or the function) that builds the pipeline;
            called as ``loader(family=, model_configs=, device=, torch_dtype=, options=,
            purpose=)`` with the arguments it names (see ``diffsynth_load_pipeline``).
        units: ``"package.module:function"`` returning extra units for a loaded pipeline,
            called as ``units(pipe=, family=)``; ``None``: the pipeline's own units only.
        lora_layout: a :class:`~diffsynth_core.lora.formats.LoraLayout` or
            ``"package.module:attribute"`` naming one; ``None``: the default layout (the
            trained model under ``defaults.export_prefix``, ComfyUI's names = diffusers').
        high_precision_modules: pipeline model -> the names of its linear layers that
            ``--base-precision`` leaves in the run's precision (paths from the model's root; a
            name covers the module and everything under it, so ``proj_out`` is the final
            projection and no block's ``proj_out``): ``{"dit": ("img_in", "txt_in", "time_text_embed",
            "norm_out", "proj_out")}``. The keys are the frozen base models ``--base-precision``
            stores quantized (fp8, int8, nf4); a model not named is never quantized. Norms,
            embeddings and convolutions are never quantized, so only linear layers need naming.
            Empty: the family supports no ``--base-precision`` (one error line says so).
        aliases: other ``--model`` names for this family (``flux`` for ``flux-dev``); an alias
            taken by another family is an error, like a taken name.
        real_size: a :class:`~diffsynth_core.memory.spec.RealSize` (or
            ``"package.module:attribute"`` naming one): the trained model at its real size,
            built without weights for ``diffsynth train --estimate-memory``; ``None``: the
            family cannot be estimated.
        blocks: pipeline model -> the attribute names of its repeated transformer-block lists
            (``nn.ModuleList``), in the order forward runs them: ``{"dit":
            ("transformer_blocks",)}``. One declaration for every mechanism that works block
            by block (block swap, sharded training's wrapping, regional compilation); read it
            with :func:`~diffsynth_core.blocks.repeated_blocks`. Empty: the family names none,
            and those mechanisms refuse it with one line.
        plugin / distribution / version: filled in by the registry from the registering
            plugin; a plugin never sets them.
    """

    name: str
    description: str
    model_files: Mapping[str, ComponentFiles] = field(default_factory=dict)
    defaults: TrainingDefaults = field(default_factory=TrainingDefaults)
    build_tiny: Callable[[Path], None] | None = None
    options: tuple[FamilyOption, ...] = ()
    base_family: str | None = None
    loader: str | Callable[..., Any] | None = None
    units: str | Callable[..., Any] | None = None
    lora_layout: LoraLayout | str | None = None
    high_precision_modules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    real_size: Any = None
    blocks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    plugin: str = ""
    distribution: str = ""
    version: str = ""

    def options_for(self, command: str) -> list[FamilyOption]:
        """The options that ``command`` (``train`` or ``generate``) accepts."""
        return [o for o in self.options if o.command in (command, "both")]

    def load(self, **arguments: Any) -> Any:
        """The pipeline, from the family's loader (``None`` when the family names none)."""
        if self.loader is None:
            return None
        return call_with_known(resolve(self.loader, f"{self.name}: loader"), family=self, **arguments)

    def pipeline_units(self, pipe: Any) -> list[Any]:
        """The units the family adds to its freshly loaded pipeline."""
        if self.units is None:
            return []
        fn = resolve(self.units, f"{self.name}: units")
        return list(call_with_known(fn, pipe=pipe, family=self) or [])

    def layout(self) -> LoraLayout:
        """The family's LoRA layout (resolved on first use)."""
        if self.lora_layout is None:
            return DEFAULT_LAYOUT
        layout = resolve(self.lora_layout, f"{self.name}: lora_layout")
        if not isinstance(layout, LoraLayout):
            raise PluginError(f"{self.name}: lora_layout {self.lora_layout!r} is not a LoraLayout")
        return layout

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``diffsynth models --json``); ``build_tiny`` as a flag."""
        return {
            "name": self.name,
            "description": self.description,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "base_family": self.base_family,
            "loader": _ref(self.loader),
            "units": _ref(self.units),
            "tiny_preset": self.build_tiny is not None,
            "model_files": {name: asdict(files) for name, files in self.model_files.items()},
            "defaults": asdict(self.defaults),
            "options": [asdict(option) for option in self.options],
            "blocks": {model: list(names) for model, names in self.blocks.items()},
            "high_precision_modules": {
                model: list(names) for model, names in self.high_precision_modules.items()
            },
        }


class FamilyRegistry:
    """Families by name; a second family with a taken name is an error naming both owners."""

    def __init__(self) -> None:
        self._families: dict[str, ModelFamily] = {}
        # Set by the plugin manager: given a family name, the error of the broken plugin that
        # (probably) provides it, so ``--model NAME`` says why NAME is missing.
        self.broken_hint: Callable[[str], str | None] = lambda name: None

    def add(self, family: ModelFamily, *, plugin: str, distribution: str, version: str) -> None:
        """Add ``family`` as owned by ``plugin``; a taken name raises DuplicateFamilyError."""
        owned = replace(family, plugin=plugin, distribution=distribution, version=version)
        old = next((self._find(n) for n in (family.name, *family.aliases) if self._find(n)), None)
        if old is not None:
            raise DuplicateFamilyError(
                f"model family {family.name!r} is registered twice: by {_owner(old)} and by "
                f"{_owner(owned)}. Uninstall one of them "
                f"(or select plugins with DIFFSYNTH_LOAD_PLUGINS)."
            )
        self._families[family.name] = owned

    def remove_plugin(self, plugin: str) -> list[str]:
        """Forget every family ``plugin`` registered (it turned out broken); their names."""
        names = [name for name, family in self._families.items() if family.plugin == plugin]
        for name in names:
            del self._families[name]
        return names

    def _find(self, name: str) -> ModelFamily | None:
        """The family whose name or alias is ``name``."""
        if name in self._families:
            return self._families[name]
        return next((f for f in self._families.values() if name in f.aliases), None)

    def get(self, name: str) -> ModelFamily:
        """The family called ``name`` (or aliased so), or an UnknownModelError that says what to do."""
        found = self._find(name)
        if found is not None:
            return found
        broken = self.broken_hint(name)
        if broken:
            raise UnknownModelError(broken)
        known = ", ".join(sorted(self._families)) or "none"
        close = difflib.get_close_matches(name, [*self._families, *FIRST_PARTY_FAMILIES], n=1)
        typo = f"Did you mean {close[0]!r}? " if close and name not in FIRST_PARTY_FAMILIES else ""
        raise UnknownModelError(
            f"no model family {name!r} is installed (installed: {known}). {typo}{install_hint(name)}"
        )

    def __iter__(self) -> Iterator[ModelFamily]:
        return iter(sorted(self._families.values(), key=lambda f: f.name))

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def __len__(self) -> int:
        return len(self._families)


def install_hint(name: str) -> str:
    """What to install for family ``name``: its distribution if it is ours, else no guess."""
    dist = FIRST_PARTY_FAMILIES.get(name)
    if dist:
        return f"Install its plugin with `pip install {dist}`, then check `diffsynth models`."
    return (
        "Install the plugin that provides it (check the name for a typo), "
        "then check `diffsynth models`."
    )


def _ref(value: Any) -> str | None:
    """A loader or units reference as text (JSON): the string, or the function's path."""
    if value is None or isinstance(value, str):
        return value
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"


def _owner(family: ModelFamily) -> str:
    """``distribution (plugin NAME)``: both, because one distribution may ship two plugins."""
    if family.distribution:
        return f"{family.distribution} (plugin {family.plugin!r})"
    return f"plugin {family.plugin!r}"
