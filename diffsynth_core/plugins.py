"""The plugin manager: built-in plugins and entry points of the group ``diffsynth``.

Built-ins and third-party plugins take the same path: both are registered with pluggy, then
their registration hooks are called one plugin at a time so that every family and loss is
attributed to the plugin that registered it, and so that one plugin's failure (an import
error, a misspelt hook, a hook that raises, a duplicate family name) marks only that plugin as
broken. ``diffsynth plugins`` shows broken plugins with their error; a command that needs one
fails with that error.
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import DiffSynthError, PluginError, UnknownLossError
from .registry import FamilyRegistry, ModelFamily

PROJECT = "diffsynth"
ENTRY_POINT_GROUP = "diffsynth"
hookimpl = pluggy.HookimplMarker(PROJECT)

BUILTIN_PLUGINS = (
    "diffsynth_core.builtins.losses",
    "diffsynth_core.builtins.checkpoints",
    "diffsynth_core.builtins.units",
)


@dataclass
class PluginInfo:
    """What ``diffsynth plugins`` shows about one plugin."""

    name: str
    distribution: str = ""
    version: str = ""
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        return "broken" if self.error else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class LossEntry:
    name: str
    fn: Callable[..., Any]
    description: str
    plugin: str


class PluginManager:
    """pluggy's manager plus the registries that the registration hooks fill."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.families = FamilyRegistry()
        self.families.broken_hint = self._broken_hint
        self.losses: dict[str, LossEntry] = {}

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # -- loading -------------------------------------------------------------------------

    def load_builtins(self) -> None:
        from . import __version__

        for module_name in BUILTIN_PLUGINS:
            short = "builtin-" + module_name.rsplit(".", 1)[1]
            info = PluginInfo(short, "diffsynth-core", __version__, builtin=True)
            self._add(info, lambda m=module_name: importlib.import_module(m))

    def load_entry_points(self, allow: set[str] | None = None) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allow is not None and ep.name not in allow:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                ep.name,
                dist.metadata["Name"] if dist else "",
                dist.version if dist else "",
            )
            self._add(info, ep.load)

    def register_object(self, plugin: object, name: str, distribution: str = "") -> PluginInfo:
        """Register an in-process plugin (tests, notebooks); same checks as entry points."""
        info = PluginInfo(name, distribution)
        self._add(info, lambda: plugin)
        self.run_registration([name])
        return self.plugins[name]

    def _add(self, info: PluginInfo, load: Callable[[], object]) -> None:
        self.plugins[info.name] = info
        if self.pm.has_plugin(info.name):
            info.error = f"a plugin named {info.name!r} is already registered"
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # a broken plugin must never take the CLI down
            info.error = _describe(exc)
            return
        unknown = self._unknown_hooks(info.name)
        if unknown:
            self.pm.unregister(name=info.name)
            info.error = (
                f"hook implementation(s) {', '.join(unknown)} match no diffsynth hook "
                "(misspelt name?); see docs/plugins.md for the hook list"
            )
            return
        info.hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(self.pm.get_plugin(info.name)) or []
        )

    def _unknown_hooks(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        return sorted(
            caller.name
            for caller in self.pm.get_hookcallers(plugin) or []
            if not caller.has_spec()
        )

    # -- registration hooks, one plugin at a time ------------------------------------------

    def run_registration(self, names: Iterable[str] | None = None) -> None:
        selected = set(names) if names is not None else None
        for impl in self._impls("diffsynth_register_models", selected):
            self._call_isolated(impl, register=self._family_registrar(impl.plugin_name))
        for impl in self._impls("diffsynth_register_losses", selected):
            self._call_isolated(impl, register=self._loss_registrar(impl.plugin_name))
        self.pm.check_pending()

    def _impls(self, hook_name: str, selected: set[str] | None) -> list[Any]:
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        # pluggy lists last-registered first; registration should follow load order
        ordered = list(reversed(impls))
        return [i for i in ordered if selected is None or i.plugin_name in selected]

    def _call_isolated(self, impl: Any, **kwargs: Any) -> None:
        info = self.plugins[impl.plugin_name]
        if info.error:
            return
        try:
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
        except Exception as exc:
            info.error = _describe(exc)

    def _family_registrar(self, plugin_name: str) -> Callable[[ModelFamily], None]:
        info = self.plugins[plugin_name]

        def register(family: ModelFamily) -> None:
            if not isinstance(family, ModelFamily):
                raise PluginError(f"register() expects a ModelFamily, got {type(family).__name__}")
            self.families.add(
                family, plugin=plugin_name, distribution=info.distribution, version=info.version
            )

        return register

    def _loss_registrar(self, plugin_name: str) -> Callable[..., None]:
        def register(name: str, loss_fn: Callable[..., Any], description: str = "") -> None:
            if name in self.losses:
                raise PluginError(
                    f"loss {name!r} is registered twice: by {self.losses[name].plugin} "
                    f"and by {plugin_name}"
                )
            self.losses[name] = LossEntry(name, loss_fn, description, plugin_name)

        return register

    # -- queries -------------------------------------------------------------------------

    def get_family(self, name: str) -> ModelFamily:
        return self.families.get(name)

    def get_loss(self, name: str) -> Callable[..., Any]:
        if name not in self.losses:
            known = ", ".join(sorted(self.losses)) or "none"
            raise UnknownLossError(f"no loss named {name!r} (registered: {known})")
        return self.losses[name].fn

    def broken(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.error]

    def _broken_hint(self, family_name: str) -> str | None:
        for info in self.broken():
            if family_name in (info.name, info.distribution.removeprefix("diffsynth-")):
                return (
                    f"model family {family_name!r} comes from plugin {info.name!r} "
                    f"({info.distribution} {info.version}), which failed to load: {info.error}. "
                    f"Fix or reinstall it; `diffsynth plugins` shows every plugin's status."
                )
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DiffSynthError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def allowed_plugins() -> set[str] | None:
    """The entry-point names selected by ``DIFFSYNTH_LOAD_PLUGINS`` (None: all)."""
    raw = os.environ.get("DIFFSYNTH_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


_MANAGER: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _MANAGER
    if _MANAGER is None:
        manager = PluginManager()
        manager.load_builtins()
        manager.load_entry_points(allowed_plugins())
        manager.run_registration()
        _MANAGER = manager
    return _MANAGER


def reset_plugin_manager(manager: PluginManager | None = None) -> None:
    """Forget the process-wide manager (tests), or install ``manager`` as it."""
    global _MANAGER
    _MANAGER = manager
