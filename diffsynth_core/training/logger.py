"""ModelLogger: writes the trained weights (LoRA or full) as safetensors checkpoints.

File names come from the ``diffsynth_checkpoint_name`` hook and key names from the registered
LoRA format ``--lora-format`` names (``PluginManager.convert_state_dict``), so a plugin can
change both. Every file
is written atomically (see :mod:`.atomic`) by the main process only, carries its provenance
as safetensors metadata (family, base models, LoRA rank/alpha/targets, step, training args)
and is listed in ``checkpoints.json``, which ``keep_last`` pruning reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..lora.inject import adapted_modules, export_lora_tensors, lora_metadata, lora_scale
from ..lora.modelspec import ModelSpec
from .atomic import atomic_write, atomic_write_json
from .ema import ema_path

MANIFEST = "checkpoints.json"
SAVE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def assert_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to write NaN/inf weights: they would silently ruin every later use of the file."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(
            f"refusing to save {what}: {len(bad)} tensor(s) hold NaN/inf (first: {bad[0]}). "
            "Lower --learning-rate or set --max-grad-norm, then resume from the last good state."
        )


class ModelLogger:
    """Saves checkpoints every N steps, every epoch and at the end (the seed's ModelLogger).

    The first nine parameters are DiffSynth-Studio's, in its order; ours are keyword-only.

    Args:
        output_path: the run's output folder; checkpoints go directly into it.
        remove_prefix_in_ckpt: cut from parameter names (``pipe.dit.``), so keys start at
            the model that was trained.
        state_dict_converter: as in the seed, called on the weights (bare keys); what it
            returns is written as is, in place of the ``export_format`` renaming.
        enable_tensorboard_log / enable_csv_log: accepted for seed scripts;
            ``launch_training_task`` always writes both logs (``output/logs``).
        enable_swanlab_log / enable_wandb_log (and their ``*_project``): not built in, an
            error when true (the TensorBoard and CSV logs are written instead).
        export_format: ``--lora-format`` (``diffusers``, ``comfyui``, ``peft`` or a plugin's);
            checked now, so a typo fails before training.
        family: the ModelFamily (naming and conversion hooks see it); None for hand-made modules.
        save_every_n_steps / save_every_epoch: when ``on_step_end`` / ``on_epoch_end`` save.
        keep_last: keep only the newest K step and epoch checkpoints (the final one is kept).
        metadata: extra provenance for every file (``training_args``, ``base_models`` ...).
        save_dtype: ``fp32``, ``bf16`` or ``fp16``: the dtype of the floating-point tensors
            written (``--save-dtype``); None keeps the trained weights' dtype. Training states
            keep the trained dtype whatever this says, so a resume stays exact.
        modelspec: a :class:`~diffsynth_core.lora.modelspec.ModelSpec` for the ``modelspec.*``
            keys (default: titled after the output folder).
    """

    def __init__(
        self,
        output_path: str | os.PathLike[str],
        remove_prefix_in_ckpt: str | None = None,
        state_dict_converter: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        enable_tensorboard_log: bool = False,
        enable_swanlab_log: bool = False,
        swanlab_project: str = "DiffSynth-Studio",
        enable_wandb_log: bool = False,
        wandb_project: str = "DiffSynth-Studio",
        enable_csv_log: bool = False,
        *,
        export_format: str = "diffusers",
        family: Any = None,
        save_every_n_steps: int | None = None,
        save_every_epoch: bool = True,
        keep_last: int | None = None,
        metadata: dict[str, Any] | None = None,
        save_dtype: str | None = None,
        modelspec: Any = None,
    ) -> None:
        from ..plugins import get_plugin_manager

        if keep_last is not None and keep_last < 1:
            raise ConfigError(f"keep_last must be at least 1, not {keep_last}")
        for name, wanted in (("swanlab", enable_swanlab_log), ("wandb", enable_wandb_log)):
            if wanted:
                raise ConfigError(
                    f"enable_{name}_log: {name} logging is not built in; the loss is logged to "
                    "TensorBoard and CSV in the output folder's logs/ (tensorboard --logdir)"
                )
        self.output_path = Path(output_path)
        self.remove_prefix_in_ckpt = remove_prefix_in_ckpt
        self.state_dict_converter = state_dict_converter
        self.export_format = export_format
        self.family = family
        self.save_every_n_steps = save_every_n_steps
        self.save_every_epoch = save_every_epoch
        self.keep_last = keep_last
        self.metadata = dict(metadata or {})
        if save_dtype is not None and save_dtype not in SAVE_DTYPES:
            raise ConfigError(
                f"save_dtype {save_dtype!r} is unknown; use one of {', '.join(SAVE_DTYPES)}"
            )
        self.save_dtype = save_dtype
        self.modelspec = modelspec or ModelSpec(title=self.output_path.resolve().name)
        self.manager = get_plugin_manager()
        self.manager.convert_state_dict({}, export_format, family, "lora")  # UnknownFormatError now

    # -- when to save (called by the runner on every process) -------------------------------

    def step_due(self, step: int) -> bool:
        """Whether ``on_step_end`` saves at ``step`` (every N steps)."""
        return bool(self.save_every_n_steps and step % self.save_every_n_steps == 0)

    def on_step_end(
        self, accelerator: Any, model: torch.nn.Module, step: int, epoch: int
    ) -> Path | None:
        return self.save(accelerator, model, "step", step, epoch) if self.step_due(step) else None

    def on_epoch_end(
        self, accelerator: Any, model: torch.nn.Module, epoch: int, step: int
    ) -> Path | None:
        return (
            self.save(accelerator, model, "epoch", step, epoch) if self.save_every_epoch else None
        )

    def on_training_end(
        self, accelerator: Any, model: torch.nn.Module, step: int, epoch: int
    ) -> Path | None:
        return self.save(accelerator, model, "final", step, epoch)

    def save(
        self, accelerator: Any, model: torch.nn.Module, kind: str, step: int, epoch: int
    ) -> Path | None:
        """Collect the weights on every process (FSDP gathers), write them on the main one."""
        from .distributed import gathered_state_dict

        state = gathered_state_dict(accelerator, model)  # FSDP: the trainable weights only
        path = self.path_for(kind, step, epoch)  # on every process: each reports the real file
        if accelerator.is_main_process:
            path = self.write(accelerator.unwrap_model(model), state, kind, step, epoch)
        accelerator.wait_for_everyone()
        return path

    def path_for(self, kind: str, step: int, epoch: int) -> Path:
        """Where the ``kind`` checkpoint of ``step`` goes (named by the plugin hook)."""
        name = self.manager.hook.diffsynth_checkpoint_name(
            kind=kind, step=step, epoch=epoch, family=self.family
        )
        return self.output_path / name

    # -- what is written ------------------------------------------------------------------

    def export(
        self, model: torch.nn.Module, state: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """Trainable weights with bare keys and alpha/rank folded into lora_B; (dict, is_lora)."""
        if hasattr(model, "export_trainable_state_dict"):
            tensors = cast(Any, model).export_trainable_state_dict(  # duck-typed module API
                state, remove_prefix=self.remove_prefix_in_ckpt
            )
        else:
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            tensors = {
                n.removeprefix(self.remove_prefix_in_ckpt or ""): v
                for n, v in state.items()
                if n in names
            }
        return export_lora_tensors(tensors, lora_scale(model))

    def file_metadata(
        self,
        model: torch.nn.Module,
        kind: str,
        step: int,
        epoch: int,
        is_lora: bool,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, str]:
        """safetensors metadata: strings only, structured values as JSON."""
        info: dict[str, Any] = {
            "kind": kind,
            "step": step,
            "epoch": epoch,
            "weights": "lora" if is_lora else "full",
        }
        info["export_format"] = self.export_format
        if self.family is not None:
            info["family"] = self.family.name
            info["base_models"] = sorted({f.model_id for f in self.family.model_files.values()})
        if is_lora:
            info.update(lora_metadata(model), lora_alpha_folded=True)
            # the modules the file adapts, by their names in the model (the keys of
            # ``tensors`` before the format's renaming), not the targets' short names
            info["target_modules"] = adapted_modules(tensors or {})
        info.update(self.metadata)
        meta = {"format": "pt"}
        family = self.family.name if self.family is not None else None
        lora_type = info.get("lora_type", "lora") if is_lora else None
        meta.update(self.modelspec.keys(family, self.export_format, lora_type))
        meta.update(
            {
                f"diffsynth.{k}": v if isinstance(v, str) else json.dumps(v, default=str)
                for k, v in info.items()
            }
        )
        return meta

    def write(
        self,
        model: torch.nn.Module,
        state: dict[str, torch.Tensor],
        kind: str,
        step: int,
        epoch: int,
        path: Path | None = None,
    ) -> Path:
        """Export, check, convert, name and atomically write one checkpoint; prune old ones.

        ``path``: write there instead, unlisted (the EMA file beside a checkpoint: pruned
        with it)."""
        from safetensors.torch import save_file

        tensors, is_lora = self.export(model, state)
        listed = path is None
        path = path or self.path_for(kind, step, epoch)
        name = path.name
        if self.save_dtype is not None:  # after alpha is folded into lora_B, in full precision
            dtype = SAVE_DTYPES[self.save_dtype]
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        assert_finite(tensors, str(path))  # also catches fp16's overflow to inf
        if self.state_dict_converter is not None:
            converted = self.state_dict_converter(tensors)
        else:
            converted = self.manager.convert_state_dict(
                tensors, self.export_format, self.family, "lora" if is_lora else "full"
            )
        meta = self.file_metadata(model, kind, step, epoch, is_lora, tensors)
        atomic_write(path, lambda tmp: save_file(converted, str(tmp), metadata=meta))
        if listed:
            self._record({"file": name, "kind": kind, "step": step, "epoch": epoch})
        return path

    # -- the manifest and pruning ------------------------------------------------------------

    def saved(self) -> list[dict[str, Any]]:
        """Checkpoints written so far in this output folder (across resumed runs), oldest first."""
        return read_manifest(self.output_path)

    def latest(self) -> Path | None:
        entries = self.saved()
        return self.output_path / entries[-1]["file"] if entries else None

    def _record(self, entry: dict[str, Any]) -> None:
        entries = [e for e in self.saved() if e["file"] != entry["file"]] + [entry]
        if self.keep_last:  # step and epoch checkpoints alike; the final one is always kept
            kept = [e for e in entries if e["kind"] in ("step", "epoch")]
            for old in kept[: max(0, len(kept) - self.keep_last)]:
                (self.output_path / old["file"]).unlink(missing_ok=True)
                ema_path(self.output_path / old["file"]).unlink(missing_ok=True)  # --ema-decay
                entries.remove(old)
        atomic_write_json(self.output_path / MANIFEST, entries)


def read_manifest(output: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries of ``output/checkpoints.json`` (file, kind, step, epoch), oldest first."""
    manifest = Path(output) / MANIFEST
    return json.loads(manifest.read_text()) if manifest.exists() else []
