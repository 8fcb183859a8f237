"""Control kinds: functions that turn an image into a control image, contributed by plugins.

The registry is filled through this plugin's own hook, ``diffsynth_register_control_kinds``
(see :mod:`diffsynth_controlnet.hookspecs`), which the plugin's ``diffsynth_addhooks`` adds to
the core's plugin manager when the plugin is registered. Each plugin's implementation is called on its own, so a kind is
attributed to the plugin that registered it and a duplicate name names both plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffsynth_core import ConfigError, PluginError

HOOK = "diffsynth_register_control_kinds"


@dataclass(frozen=True)
class ControlKind:
    """One registered kind: ``fn(image, **params) -> control image``."""

    name: str
    fn: Callable[..., Any]
    description: str
    plugin: str


def _check_arguments(impl: Any) -> None:
    # pluggy checks this only for plugins registered before the spec is added; a later one
    # (register_object) would otherwise fail with a bare TypeError
    extra = set(impl.argnames) - {"register"}
    if extra:
        raise PluginError(
            f"plugin {impl.plugin_name!r}: {HOOK} asks for {', '.join(sorted(extra))}; "
            "the hook gives only `register`"
        )


def _registrar(kinds: dict[str, ControlKind], plugin: str) -> Callable[..., None]:
    def register(name: str, fn: Callable[..., Any], description: str = "") -> None:
        if name in kinds:
            raise PluginError(
                f"control kind {name!r} is registered twice: by plugin {kinds[name].plugin!r} "
                f"and by plugin {plugin!r}"
            )
        if not callable(fn):
            raise PluginError(f"control kind {name!r} of plugin {plugin!r}: fn is not callable")
        kinds[name] = ControlKind(name, fn, description, plugin)

    return register


def collect_kinds(manager: Any) -> dict[str, ControlKind]:
    """Every control kind the plugins of ``manager`` register, by name."""
    kinds: dict[str, ControlKind] = {}
    caller = getattr(manager.pm.hook, HOOK, None)
    if caller is None or not caller.has_spec():  # this plugin is not loaded in ``manager``
        return kinds
    order = {name: i for i, name in enumerate(manager.plugins)}  # kinds follow plugin load order
    impls = caller.get_hookimpls()
    for impl in sorted(impls, key=lambda impl: order.get(impl.plugin_name, len(order))):
        _check_arguments(impl)
        impl.function(register=_registrar(kinds, impl.plugin_name))
    return kinds


def get_kind(manager: Any, name: str) -> ControlKind:
    """The kind ``--kind name`` selects, or a ConfigError listing the registered ones."""
    kinds = collect_kinds(manager)
    if name not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        raise ConfigError(
            f"no control kind {name!r} is registered (registered: {known}); a plugin adds one "
            f"with the {HOOK} hook"
        )
    return kinds[name]


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``("low=50", "mode=fast")`` -> ``{"low": 50, "mode": "fast"}`` (numbers converted)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE")
        params[key.strip()] = _number_or_text(value.strip())
    return params


def _number_or_text(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def builtin_canny(image: Any, low: float = 100.0, high: float = 200.0, sigma: float = 1.0) -> Any:
    """The ``canny`` kind (imported lazily so registering it costs nothing)."""
    from .canny import canny

    return canny(image, low=float(low), high=float(high), sigma=float(sigma))
