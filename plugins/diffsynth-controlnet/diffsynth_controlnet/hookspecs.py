"""The hook this plugin adds to diffsynth: control kinds for ``diffsynth controlnet prepare``.

A *control kind* turns a training image into a control image (``canny`` edges here; depth or
pose maps in other plugins). Plugins contribute kinds through the same pluggy project as every
diffsynth hook (``diffsynth``), but the spec lives in this plugin, not in the core: the
plugin's ``diffsynth_addhooks(pluginmanager)`` adds it (``pluginmanager.add_hookspecs``) when
the plugin is registered, as pytest plugins add theirs in ``pytest_addhooks``. The core checks
hook names only after every plugin is registered, so a plugin implementing this hook loads
whether it comes before or after this one.
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

    Return value: ignored.
    """
