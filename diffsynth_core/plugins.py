"""The plugin manager: built-in plugins and entry points of the group ``diffsynth``.

Built-ins and third-party plugins take the same path: both are registered with pluggy, then
their registration hooks are called one plugin at a time so that every family and loss is
attributed to the plugin that registered it (LoRA formats too), and so that one plugin's failure (an import
error, an invalid or misspelt hook, a hook that raises, a duplicate family name) marks only
that plugin as broken. A broken plugin is unregistered and everything it had registered is
forgotten, so half a plugin never runs. ``diffsynth plugins`` shows broken plugins with their
error; a command that needs one fails with that error. A plugin may define hooks of its own
for other plugins: its ``diffsynth_addhooks(pluginmanager)`` (called when it is registered, as
pytest calls ``pytest_addhooks``) calls :meth:`PluginManager.add_hookspecs`; hook names are
checked against the specs once every plugin is registered, so load order does not matter.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import DiffSynthError, PluginError, UnknownFormatError, UnknownLossError
from .lora.formats import LoraFormat, call_with_known
from .registry import FamilyRegistry, ModelFamily

PROJECT = "diffsynth"
ENTRY_POINT_GROUP = "diffsynth"
LOAD_ENV = "DIFFSYNTH_LOAD_PLUGINS"
hookimpl = pluggy.HookimplMarker(PROJECT)

BUILTIN_PLUGINS = (
    "diffsynth_core.builtins.losses",
    "diffsynth_core.builtins.checkpoints",
    "diffsynth_core.builtins.formats",
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
    families: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    lora_formats: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        return "broken" if self.error else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class LossEntry:
    """A loss registered through ``diffsynth_register_losses``."""

    name: str
    fn: Callable[..., Any]
    description: str
    plugin: str


class PluginManager:
    """pluggy's manager plus the registries that the registration hooks fill."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        # historic: every plugin registered from now on gets its diffsynth_addhooks called
        self.pm.hook.diffsynth_addhooks.call_historic(kwargs={"pluginmanager": self})
        self.plugins: dict[str, PluginInfo] = {}
        self.families = FamilyRegistry()
        self.families.broken_hint = self._broken_hint
        self.losses: dict[str, LossEntry] = {}
        self.lora_formats: dict[str, LoraFormat] = {}
        # names in DIFFSYNTH_LOAD_PLUGINS that no installed plugin has (a typo, usually)
        self.unknown_selected: list[str] = []

    @classmethod
    def with_plugins(cls, *plugins: object) -> PluginManager:
        """The built-ins plus ``plugins`` (modules or objects), each named by its ``__name__``.

        For tests, notebooks and the examples in docs/plugins.md; entry points are not read.
        """
        manager = cls()
        manager.load_builtins()
        for plugin in plugins:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            manager._add(PluginInfo(name), functools.partial(_same, plugin))
        manager.run_registration()
        return manager

    @property
    def hook(self) -> Any:
        """pluggy's hook relay: ``manager.hook.diffsynth_load_pipeline(family=...)``."""
        return self.pm.hook

    def add_hookspecs(self, module_or_class: ModuleType | type) -> None:
        """Add a plugin's own hookspecs (from its ``diffsynth_addhooks``); see hookspecs.py.

        Implementations already registered are validated now: a wrong argument name is a
        PluginError naming their plugin (which is then marked broken).
        """
        try:
            self.pm.add_hookspecs(module_or_class)
        except pluggy.PluginValidationError as error:
            name = self.pm.get_name(error.plugin) or repr(error.plugin)
            message = " ".join(str(error).split())
            if name in self.plugins:
                self._mark_broken(name, message)
                return
            raise PluginError(f"plugin {name!r}: {message}") from error

    # -- loading -------------------------------------------------------------------------

    def load_builtins(self) -> None:
        """Register the built-in plugins (always loaded, whatever DIFFSYNTH_LOAD_PLUGINS says)."""
        from . import __version__

        for module_name in BUILTIN_PLUGINS:
            short = "builtin-" + module_name.rsplit(".", 1)[1]
            info = PluginInfo(short, "diffsynth-core", __version__, builtin=True)
            self._add(info, functools.partial(importlib.import_module, module_name))

    def load_entry_points(self, allow: set[str] | None = None) -> None:
        """Import and register every ``diffsynth`` entry point (only ``allow``'s, if given)."""
        found = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        for ep in found:
            if allow is None or ep.name in allow:
                dist = getattr(ep, "dist", None)
                name = dist.metadata["Name"] if dist else ""
                self._add(PluginInfo(ep.name, name, dist.version if dist else ""), ep.load)
        names = sorted({ep.name for ep in found})
        for missing in sorted((allow or set()) - set(names)):
            error = _unknown_selection(missing, names)
            self.unknown_selected.append(missing)
            self.plugins.setdefault(missing, PluginInfo(missing, error=error))

    def register_object(
        self, plugin: object, name: str, distribution: str = "", version: str = ""
    ) -> PluginInfo:
        """Register an in-process plugin (tests, notebooks); same checks as entry points."""
        info = PluginInfo(name, distribution, version)
        self._add(info, lambda: plugin)
        self.run_registration([info.name])
        return info

    def _add(self, info: PluginInfo, load: Callable[[], object]) -> None:
        if info.name in self.plugins:
            # Two distributions with one entry-point name: keep the first, show the second.
            first = self.plugins[info.name]
            info.name = f"{info.name} ({info.distribution or 'in-process'})"
            info.error = (
                f"a plugin named {first.name!r} is already registered by {first.distribution}"
            )
            self.plugins[info.name] = info
            return
        self.plugins[info.name] = info
        try:
            self.pm.register(load(), name=info.name)
        except (Exception, SystemExit) as exc:  # a broken plugin must never take the CLI down
            self._mark_broken(info.name, describe_error(exc))
            return
        callers = self.pm.get_hookcallers(self.pm.get_plugin(info.name)) or []
        info.hooks = sorted(caller.name for caller in callers)

    def _unknown_hooks(self, name: str) -> list[str]:
        callers = self.pm.get_hookcallers(self.pm.get_plugin(name)) or []
        return sorted(
            {
                caller.name
                for caller in callers
                if not caller.has_spec()
                for impl in caller.get_hookimpls()
                if impl.plugin_name == name and not impl.optionalhook
            }
        )

    def _mark_broken(self, name: str, error: str) -> None:
        """Record ``error`` (the first one wins) and take back all the plugin contributed."""
        info = self.plugins[name]
        info.error = info.error or error
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.families.remove_plugin(name)
        for loss in [entry.name for entry in self.losses.values() if entry.plugin == name]:
            del self.losses[loss]
        for fmt in [entry.name for entry in self.lora_formats.values() if entry.plugin == name]:
            del self.lora_formats[fmt]

    # -- registration hooks, one plugin at a time ------------------------------------------

    def run_registration(self, names: Iterable[str] | None = None) -> None:
        """Call the model and loss registration hooks of ``names`` (default: all plugins)."""
        selected = set(names) if names is not None else None
        self._check_hook_names(selected)
        for impl in self._impls("diffsynth_register_models", selected):
            self._call_isolated(impl, register=self._family_registrar(impl.plugin_name))
        for impl in self._impls("diffsynth_register_losses", selected):
            self._call_isolated(impl, register=self._loss_registrar(impl.plugin_name))
        for impl in self._impls("diffsynth_register_lora_formats", selected):
            self._call_isolated(impl, register=self._format_registrar(impl.plugin_name))
        self._check_pending()

    def register_commands(self, cli: Any) -> None:
        """Let every plugin add subcommands to ``cli`` (a click.Group); collisions break it."""
        for impl in self._impls("diffsynth_register_commands", None):
            before = dict(cli.commands)
            ok = self._call_isolated(impl, cli=cli)
            replaced = [n for n, cmd in before.items() if cli.commands.get(n) is not cmd]
            if ok and replaced:
                ok = False
                self._mark_broken(
                    impl.plugin_name,
                    f"its command(s) {', '.join(sorted(replaced))} collide with existing ones",
                )
            if not ok:  # leave the CLI exactly as it was before this plugin
                cli.commands.clear()
                cli.commands.update(before)
            else:
                self.plugins[impl.plugin_name].commands = sorted(set(cli.commands) - set(before))

    def _check_hook_names(self, selected: set[str] | None) -> None:
        # after every plugin is registered, so a hook another plugin adds (diffsynth_addhooks)
        # is known whichever of the two loaded first
        for name, info in list(self.plugins.items()):
            if info.error or not self.pm.has_plugin(name):
                continue
            if selected is not None and name not in selected:
                continue
            unknown = self._unknown_hooks(name)
            if unknown:
                self._mark_broken(
                    name,
                    f"hook implementation(s) {', '.join(unknown)} match no diffsynth hook "
                    "(misspelt name?); see docs/plugins.md for the hook list",
                )

    def _impls(self, hook_name: str, selected: set[str] | None) -> list[Any]:
        order = {name: i for i, name in enumerate(self.plugins)}
        impls = [
            impl
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls()
            if not (impl.wrapper or impl.hookwrapper)
            and (selected is None or impl.plugin_name in selected)
        ]
        return sorted(impls, key=lambda impl: order.get(impl.plugin_name, len(order)))

    def _call_isolated(self, impl: Any, **kwargs: Any) -> bool:
        """Call one hook implementation; on error mark its plugin broken. True if it worked."""
        if self.plugins[impl.plugin_name].error:
            return False
        try:
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
        except Exception as exc:
            self._mark_broken(impl.plugin_name, describe_error(exc))
            return False
        return True

    def _check_pending(self) -> None:
        # _add already refuses hooks without a spec; this catches whatever slips past it.
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
                self.plugins.setdefault(name, PluginInfo(name))
                self._mark_broken(name, describe_error(exc))

    def _family_registrar(self, plugin_name: str) -> Callable[[ModelFamily], None]:
        info = self.plugins[plugin_name]

        def register(family: ModelFamily) -> None:
            if not isinstance(family, ModelFamily):
                raise PluginError(f"register() expects a ModelFamily, got {type(family).__name__}")
            info.families.append(family.name)
            self.families.add(
                family, plugin=plugin_name, distribution=info.distribution, version=info.version
            )

        return register

    def _loss_registrar(self, plugin_name: str) -> Callable[..., None]:
        def register(name: str, loss_fn: Callable[..., Any], description: str = "") -> None:
            if name in self.losses:
                raise PluginError(
                    f"loss {name!r} is registered twice: by plugin {self.losses[name].plugin!r} "
                    f"and by plugin {plugin_name!r}"
                )
            self.losses[name] = LossEntry(name, loss_fn, description, plugin_name)

        return register

    def _format_registrar(self, plugin_name: str) -> Callable[[LoraFormat], None]:
        info = self.plugins[plugin_name]

        def register(lora_format: LoraFormat) -> None:
            if not isinstance(lora_format, LoraFormat):
                raise PluginError(
                    f"register() expects a LoraFormat, got {type(lora_format).__name__}"
                )
            old = self.lora_formats.get(lora_format.name)
            if old is not None:
                raise PluginError(
                    f"LoRA format {lora_format.name!r} is registered twice: by plugin "
                    f"{old.plugin!r} and by plugin {plugin_name!r}"
                )
            info.lora_formats.append(lora_format.name)
            self.lora_formats[lora_format.name] = replace(lora_format, plugin=plugin_name)

        return register

    # -- queries -------------------------------------------------------------------------

    def get_family(self, name: str) -> ModelFamily:
        """The family ``--model name`` selects (UnknownModelError says why it is missing)."""
        return self.families.get(name)

    def get_loss(self, name: str) -> Callable[..., Any]:
        """The loss function ``--loss name`` selects."""
        if name not in self.losses:
            known = ", ".join(sorted(self.losses)) or "none"
            raise UnknownLossError(f"no loss named {name!r} (registered: {known})")
        return self.losses[name].fn

    def convert_state_dict(
        self, state_dict: dict[str, Any], format: str, family: Any = None, kind: str = "lora"
    ) -> dict[str, Any]:
        """``diffsynth_convert_state_dict``, with an error for a format no plugin converts."""
        converted = self.hook.diffsynth_convert_state_dict(
            state_dict=state_dict, format=format, family=family, kind=kind
        )
        if converted is not None:
            return converted
        export = self.get_lora_format(format).export
        assert export is not None  # get_lora_format refuses read-only formats
        return export(state_dict, family, kind)

    def get_lora_format(self, name: str) -> LoraFormat:
        """The format ``--lora-format name`` selects; UnknownFormatError lists the installed."""
        found = self.lora_formats.get(name)
        if found is not None and found.export is not None:
            return found
        writable = ", ".join(sorted(n for n, f in self.lora_formats.items() if f.export)) or "none"
        what = "is read-only" if found is not None else "is installed"
        raise UnknownFormatError(
            f"no LoRA format {name!r} {what} (--lora-format: {writable}; "
            "`diffsynth plugins` lists every format and its plugin)"
        )

    def import_lora(
        self, state_dict: dict[str, Any], family: Any, module_names: list[str]
    ) -> dict[str, Any] | None:
        """The first registered format that detects ``state_dict``'s keys renames it."""
        for lora_format in self.lora_formats.values():
            if lora_format.detect is None or lora_format.import_ is None:
                continue
            if lora_format.detect(list(state_dict)):
                return call_with_known(
                    lora_format.import_,
                    state_dict=state_dict,
                    family=family,
                    module_names=module_names,
                )
        return None

    def broken(self) -> list[PluginInfo]:
        """Every plugin that failed to load, in load order."""
        return [p for p in self.plugins.values() if p.error]

    def _broken_hint(self, family_name: str) -> str | None:
        for info in self.broken():
            dist = info.distribution.lower().replace("_", "-").removeprefix("diffsynth-")
            if family_name in info.families or family_name in (info.name, dist):
                return (
                    f"model family {family_name!r} comes from plugin {info.name!r} "
                    f"({info.distribution} {info.version}), which failed to load: {info.error}. "
                    f"Fix or reinstall it; `diffsynth plugins` shows every plugin's status."
                )
        silent = [p for p in self.broken() if not p.families]
        if not silent:
            return None
        names = "; ".join(f"{p.name}: {p.error}" for p in silent)
        return (
            f"no model family {family_name!r} is installed (installed: "
            f"{', '.join(f.name for f in self.families) or 'none'}); plugin(s) that failed to load "
            f"may provide it: {names}. Fix them (see `diffsynth plugins`) or install its plugin."
        )


def describe_error(exc: BaseException) -> str:
    """One line for a plugin's error: ``Type: message (at file:line)`` of the plugin's frame."""
    text = " ".join(str(exc).split())
    if isinstance(exc, DiffSynthError):
        return text
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {text}{where}"


def _same(plugin: object) -> object:
    """``functools.partial(_same, plugin)``: a loader of a plugin object given in-process."""
    return plugin


def _unknown_selection(name: str, installed: list[str]) -> str:
    """The error of a name in DIFFSYNTH_LOAD_PLUGINS that matches no entry point."""
    close = difflib.get_close_matches(name, installed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"selected by {LOAD_ENV} but no installed plugin has this entry-point name "
        f"({hint}installed: {', '.join(installed) or 'none'})"
    )


def allowed_plugins() -> set[str] | None:
    """The entry-point names selected by ``DIFFSYNTH_LOAD_PLUGINS`` (None: all; empty: none)."""
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


_MANAGER: PluginManager | None = None


def build_plugin_manager() -> PluginManager:
    """A new manager with the built-ins and the selected entry points loaded and registered."""
    manager = PluginManager()
    manager.load_builtins()
    manager.load_entry_points(allowed_plugins())
    manager.run_registration()
    return manager


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = build_plugin_manager()
    return _MANAGER


def reset_plugin_manager(manager: PluginManager | None = None) -> None:
    """Forget the process-wide manager (tests), or install ``manager`` as it."""
    global _MANAGER
    _MANAGER = manager
