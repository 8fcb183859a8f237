"""Every hook of diffsynth, grouped by the phase in which it is called.

The pluggy project name and the entry-point group are both ``diffsynth``. A plugin is a module
(or object) with functions marked ``@diffsynth_core.hookimpl`` whose names are the names below.
Hooks are always called with keyword arguments, so an implementation may accept only the
arguments it needs, in any order. While loading, a function marked ``@hookimpl`` whose name
matches no spec (a typo), or that asks for an argument its spec does not give, marks its
plugin as broken instead of being silently ignored; ``pm.check_pending()`` runs after loading.
A broken plugin is unregistered and whatever it had registered is taken back.

Phases, in the order a ``diffsynth train`` run meets them:

1. registration -- ``diffsynth_addhooks`` (when the plugin is registered),
   ``diffsynth_register_models``, ``diffsynth_register_losses``,
   ``diffsynth_register_lora_formats``, ``diffsynth_register_commands``: called once, when the
   plugin manager is built.
2. loading -- ``diffsynth_load_pipeline``, ``diffsynth_pipeline_units``: called by
   :func:`diffsynth_core.pipeline.load_pipeline` for the selected family. A family carries its
   own loader, units and LoRA layout (``ModelFamily.loader`` / ``units`` / ``lora_layout``);
   these hooks are for cross-cutting work only (overriding a loader, one plugin extending
   another's family), so no implementation needs to test a family's name.
3. execution -- ``diffsynth_run_unit``: called for every unit of every forward pass
   (training and inference share it).
4. saving -- ``diffsynth_checkpoint_name``, ``diffsynth_convert_state_dict``: called by
   :class:`diffsynth_core.training.logger.ModelLogger` for every checkpoint it writes. The
   formats themselves are registered objects (``diffsynth_register_lora_formats``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:  # types only: registering must stay torch-free (``diffsynth --help``)
    import click
    import torch

    from diffsynth_core import BasePipeline, LoraFormat, ModelConfig, ModelFamily, PipelineUnit

    from .plugins import PluginManager

hookspec = pluggy.HookspecMarker("diffsynth")


class LossRegistrar(Protocol):
    """The ``register`` of ``diffsynth_register_losses``."""

    def __call__(
        self, name: str, loss_fn: Callable[..., torch.Tensor], description: str = ""
    ) -> None: ...


# --- 1. registration ------------------------------------------------------------------------


@hookspec(historic=True)
def diffsynth_addhooks(pluginmanager: PluginManager) -> None:
    """Add this plugin's own hookspecs (hooks it defines for other plugins).

    Called once for every plugin, when it is registered (a historic hook, like pytest's
    ``pytest_addhooks``). ``pluginmanager`` is the
    :class:`~diffsynth_core.plugins.PluginManager`; call
    ``pluginmanager.add_hookspecs(module_or_class)`` with the module holding your
    ``pluggy.HookspecMarker("diffsynth")`` specs. Implementations of those hooks in plugins
    registered earlier are validated then; an invalid one marks its plugin broken. Hook
    implementations are checked against the known specs only after every plugin is
    registered, so load order does not matter.

    Return value: ignored.
    """


@hookspec
def diffsynth_register_models(register: Callable[[ModelFamily], None]) -> None:
    """Register the model families this plugin provides.

    Called once per plugin while the plugin manager is built (so also by ``diffsynth --help``:
    keep it free of heavy imports). Call ``register(ModelFamily(...))`` once per family. The
    registry records which plugin and distribution registered it. A family name registered
    by two plugins is an error naming both distributions; the second plugin is marked broken.
    An exception raised here marks the plugin broken too (its families are taken back).

    Return value: ignored.
    """


@hookspec
def diffsynth_register_losses(register: LossRegistrar) -> None:
    """Register training losses selectable with ``--loss NAME``.

    Called once per plugin while the plugin manager is built. Call
    ``register(name, loss_fn, description="...")`` where ``loss_fn(pipe, **inputs)`` returns a
    scalar tensor; ``inputs`` are the shared and positive inputs after every pipeline unit has
    run. The built-in ``sft`` loss (flow-matching supervised fine-tuning) is registered
    through this same hook by the ``builtin`` plugin. A name registered twice is an error.

    Return value: ignored.
    """


@hookspec
def diffsynth_register_lora_formats(register: Callable[[LoraFormat], None]) -> None:
    """Register LoRA / checkpoint formats selectable with ``--lora-format NAME``.

    Called once per plugin while the plugin manager is built. Call
    ``register(LoraFormat(name, description, export, detect, import_))``
    (:class:`~diffsynth_core.lora.formats.LoraFormat`): ``export(state_dict, family, kind)``
    returns the keys written to the file, ``detect(keys)`` / ``import_(state_dict, family,
    module_names)`` optionally read files in the format. The built-in ``diffusers``,
    ``comfyui``, ``peft`` and the read-only ``kohya`` are registered through this same hook by
    the ``builtin-formats`` plugin; they apply each family's ``lora_layout``, so a family
    declares its layout instead of a format. A name registered twice is an error naming both
    plugins; ``diffsynth plugins`` lists every format.

    Return value: ignored.
    """


@hookspec
def diffsynth_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``diffsynth`` command line.

    Called once per plugin when the CLI is built. ``cli`` is the top-level ``click.Group``;
    add commands with ``cli.add_command(cmd)`` or ``@cli.command()`` /
    ``@cli.group()``. Import torch and model code inside the command body, not here, so
    ``diffsynth --help`` stays fast. A command whose name is already taken (by the core or an
    earlier plugin), or an exception raised here, leaves the CLI as it was before this plugin
    and marks the plugin broken. Plugins are called in load order: built-ins, then entry
    points sorted by name.

    Return value: ignored.
    """


# --- 2. loading -----------------------------------------------------------------------------


@hookspec(firstresult=True)
def diffsynth_load_pipeline(
    family: ModelFamily,
    model_configs: dict[str, ModelConfig],
    device: str,
    torch_dtype: torch.dtype,
    options: dict[str, Any],
    purpose: str,
) -> BasePipeline | None:
    """Override the loader of a family (the family's own ``loader`` is used otherwise).

    Called by :func:`diffsynth_core.pipeline.load_pipeline` (``diffsynth train``,
    ``diffsynth generate``, the seed-style ``from_pretrained``). ``family`` is a
    :class:`~diffsynth_core.registry.ModelFamily`; ``model_configs`` maps a component name
    (``dit``, ``vae``, ``text_encoder``, ``tokenizer`` ...) to a
    :class:`~diffsynth_core.loading.ModelConfig` whose ``resolve()`` gives the files on disk;
    ``device`` is a torch device string; ``torch_dtype`` the dtype for the weights;
    ``options`` the family options the user gave (``FamilyOption`` names -> parsed values, e.g.
    ``{"controlnet": Path(...), "controlnet_layers": 2}``; empty when none), so that options
    which decide what to load arrive before the optimizer is built; ``purpose`` says why the
    pipeline is loaded: ``"train"`` (``diffsynth train``: fail now if there is nothing to
    train), ``"generate"`` (``diffsynth generate``) or ``"python"`` (any other caller).

    Return a :class:`~diffsynth_core.pipeline.BasePipeline`, or ``None`` to leave it to the
    next implementation and finally to ``family.load(...)``. firstresult: the first
    non-``None`` result wins; pluggy calls later-registered plugins first. A plugin loading its
    own family names the loader in its ``ModelFamily(loader="pkg.module:function")`` instead.
    """


@hookspec
def diffsynth_pipeline_units(family: ModelFamily, pipe: BasePipeline) -> list[PipelineUnit] | None:
    """Contribute extra pipeline units to a freshly loaded pipeline.

    Called once per :func:`~diffsynth_core.pipeline.load_pipeline`, right after the pipeline
    is loaded and the family's own ``units`` are added, with the same ``family`` and the loaded
    ``pipe``. Return a list
    of :class:`~diffsynth_core.pipeline.PipelineUnit` (or ``None``). A unit whose
    ``insert_before`` names an existing unit is inserted in front of it, otherwise it is
    appended. Results of all plugins are combined in call order. This is how one plugin
    extends another's pipeline without editing it (the ControlNet plugin adds its unit to the
    Qwen-Image pipeline this way).
    """


# --- 3. execution ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def diffsynth_run_unit(
    unit: PipelineUnit,
    pipe: BasePipeline,
    inputs_shared: dict[str, Any],
    inputs_posi: dict[str, Any],
    inputs_nega: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """Run one pipeline unit.

    Called by :meth:`~diffsynth_core.pipeline.BasePipeline.unit_runner` for every unit, in
    training and in inference. Return the updated ``(inputs_shared, inputs_posi,
    inputs_nega)``. firstresult: the built-in implementation (``trylast``) does the real work
    (separate CFG passes, take-over units, declared inputs and outputs); a plugin may replace
    it for some units by returning a result first. To observe units (timing, caching, logging)
    without changing them, implement it as a wrapper: ``@hookimpl(wrapper=True)`` and
    ``result = yield``.
    """


@hookspec(firstresult=True)
def diffsynth_import_lora(
    state_dict: dict[str, torch.Tensor], family: ModelFamily | None, model: torch.nn.Module
) -> dict[str, torch.Tensor] | None:
    """Override how a LoRA file is read (a family's own names belong in its ``lora_layout``).

    Called by :func:`diffsynth_core.lora.inject.read_lora_file` (``generate --lora``,
    ``--lora-checkpoint``, a pipeline's ``load_lora``) after the file is read and before the
    core normalizes the common forms (peft / DiffSynth-Studio ``.default.``, the
    ``transformer.`` / ``diffusion_model.`` prefixes, ``lora_down``/``lora_up`` + ``alpha``,
    kohya ``lora_unet_...``). ``state_dict`` is the file's raw content; ``family`` the
    ModelFamily of the pipeline (or ``None``); ``model`` the ``torch.nn.Module`` the LoRA is
    for. Return a dict whose keys use ``model``'s module names (any of the common forms is
    fine), or ``None`` when the file is not in your form; then the family's
    ``lora_layout.import_keys`` and the registered formats' ``detect`` / ``import_`` are tried.
    """


# --- 4. saving ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def diffsynth_checkpoint_name(
    kind: str, step: int, epoch: int, family: ModelFamily | None
) -> str | None:
    """Name a checkpoint file.

    Called by ``ModelLogger`` each time it saves. ``kind`` is ``"step"`` (every N steps),
    ``"epoch"`` (end of an epoch) or ``"final"`` (end of training); ``step`` is the global
    optimizer step, ``epoch`` the 0-based epoch; ``family`` the ModelFamily or ``None`` for a
    hand-written training module. Return a file name ending in ``.safetensors`` (no folder),
    or ``None`` to leave it to the next implementation. The built-in default gives
    ``step-000100.safetensors``, ``epoch-0.safetensors`` and ``final.safetensors``.
    """


@hookspec(firstresult=True)
def diffsynth_convert_state_dict(
    state_dict: dict[str, torch.Tensor], format: str, family: ModelFamily | None, kind: str
) -> dict[str, torch.Tensor] | None:
    """Override the export of a state dict (formats are registered ``LoraFormat`` objects).

    Called by ``ModelLogger`` before every write. ``state_dict`` has module-path keys as
    peft's ``get_peft_model_state_dict`` gives them (``transformer_blocks.0.attn.to_q.lora_A
    .weight``) or plain parameter names for full training; ``format`` is the ``--lora-format``
    value; ``family`` the ModelFamily (``export_prefix`` in its defaults) or ``None``; ``kind``
    is ``"lora"`` or ``"full"``. Return the converted dict, or ``None`` to leave it to the
    registered format of that name (``diffsynth_register_lora_formats``). A format that is
    neither is an error before training starts
    (:meth:`~diffsynth_core.plugins.PluginManager.convert_state_dict` raises
    ``UnknownFormatError`` listing the installed formats).
    """
