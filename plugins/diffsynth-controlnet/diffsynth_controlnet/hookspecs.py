"""The hook this plugin adds to diffsynth: control kinds for ``diffsynth controlnet prepare``.

A *control kind* turns a training image into a control image (``canny`` edges here; depth or
pose maps in other plugins). Plugins contribute kinds through the same pluggy project as every
diffsynth hook (``diffsynth``), but the spec lives in this plugin, not in the core:
:func:`diffsynth_controlnet.kinds.add_hookspecs` adds it to the core's plugin manager the first
time kinds are needed (pluggy's ``PluginManager.add_hookspecs``).

Because the core checks each plugin's hooks against the specs known *when that plugin is
registered*, and plugins load in name order, an implementation must be marked
``@hookimpl(optionalhook=True)``: then it loads whether or not this plugin was registered
first, and pluggy still validates its signature once the spec is added.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("diffsynth")


@hookspec
def diffsynth_register_control_kinds(register: Callable[..., None]) -> None:
    """Register control kinds selectable with ``diffsynth controlnet prepare --kind NAME``.

    Called once per plugin, in load order, the first time a command needs the kinds (never by
    ``diffsynth --help``: keep heavy imports inside the kind function anyway). Call
    ``register(name, fn, description="...")`` where ``fn(image: PIL.Image.Image, **params)``
    returns the control image (a ``PIL.Image.Image`` of the same size); ``params`` are the
    ``--param key=value`` pairs of the command, as strings converted to int/float when they
    look like numbers. A kind name registered twice is an error naming both plugins. The
    ``canny`` kind is registered through this hook by ``diffsynth-controlnet`` itself.

    Implement it with ``@diffsynth_core.hookimpl(optionalhook=True)`` (see the module docstring).

    Return value: ignored.
    """
