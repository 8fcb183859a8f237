"""Training state for ``--resume``: a resumed run ends exactly where an unbroken run ends.

``output/state/step-N/`` holds:

* ``trainable.safetensors`` -- the trainable weights only (frozen ones are reloaded from the
  model files), never NaN (refused);
* ``optimizer.pt`` -- the optimizer's state dict (tensors and numbers only: read back with
  ``torch.load(weights_only=True)``);
* ``rng.pt`` -- python, numpy, torch and CUDA RNG states of every process;
* ``ema.safetensors`` -- under ``--ema-decay``, the moving average (:mod:`.ema`);
* ``trainer_state.json`` -- the position (epoch, batch within the epoch, optimizer step) and
  the data layout it refers to (dataset size, batch size, accumulation, processes, seed).

The LR schedule is a function of the step, so it needs no file. A folder is written under a
temporary name and renamed when complete: a kill mid-save leaves the previous state newest.
Under FSDP or DeepSpeed the weights and optimizer are sharded; their part is delegated to
``accelerator.save_state`` / ``load_state`` into ``accelerate/`` (every process writes its
shards into the temporary folder, the main process renames it once all have written).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import ResumeError
from .atomic import TMP_PREFIX, fsync_path
from .logger import assert_finite

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class TrainingPosition:
    """Where training stands: ``batch`` batches of ``epoch`` done, ``step`` optimizer steps done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0

    def after_step(self, batch: int) -> TrainingPosition:
        return replace(self, batch=batch, step=self.step + 1)

    def next_epoch(self) -> TrainingPosition:
        return TrainingPosition(epoch=self.epoch + 1, batch=0, step=self.step)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    # legacy=True gives the tuple (numpy's annotation also allows the dict of legacy=False)
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, cached = state["numpy"]
    random.setstate(state["python"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sharded(accelerator: Any) -> bool:
    return str(accelerator.distributed_type).rsplit(".", 1)[-1] in ("FSDP", "DEEPSPEED")


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad}


class TrainingStates:
    """Saves, finds, loads and prunes the states under ``root`` (``output/state``)."""

    def __init__(self, root: Path, layout: dict[str, int], keep: int = 1) -> None:
        self.root = Path(root)
        self.layout = layout
        self.keep = keep
        self.saved_step: int | None = None
        self.ema: Any = None  # an EmaWeights (--ema-decay): saved and loaded with the weights

    # -- saving ---------------------------------------------------------------------------

    def path_for(self, step: int) -> Path:
        return self.root / f"step-{step:06d}"

    def save(
        self,
        accelerator: Any,
        model: torch.nn.Module,
        optimizer: Any,
        position: TrainingPosition,
        rng: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``state/step-N`` (collective: every process calls it); ``rng``: this process's
        RNG states at that step (:func:`capture_rng`), default the current ones."""
        final = self.path_for(position.step)
        tmp = self.root / f"{TMP_PREFIX}step-{position.step:06d}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        states = _gather(accelerator, capture_rng() if rng is None else rng)
        try:
            if _sharded(accelerator):
                accelerator.save_state(str(tmp / "accelerate"))
                accelerator.wait_for_everyone()  # every process's files are in before the rename
            if accelerator.is_main_process:
                if not _sharded(accelerator):
                    self._write_weights(tmp, accelerator.unwrap_model(model), optimizer)
                torch.save(states, tmp / "rng.pt")
                (tmp / STATE_FILE).write_text(
                    json.dumps({"position": asdict(position), "layout": self.layout}, indent=2)
                )
                self._publish(tmp, final)
        except Exception:  # a failed write (disk full): free the half-written folder's space
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        accelerator.wait_for_everyone()
        self.saved_step = position.step
        return final

    def _write_weights(self, folder: Path, model: torch.nn.Module, optimizer: Any) -> None:
        from safetensors.torch import save_file

        weights = trainable_weights(model)
        assert_finite(weights, f"the training state in {folder.parent}")
        save_file(weights, str(folder / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        if self.ema is not None:
            self.ema.save(folder)

    def _publish(self, tmp: Path, final: Path) -> None:
        for file in tmp.rglob("*"):
            if file.is_file():
                fsync_path(file)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_path(self.root)
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    # -- finding and loading --------------------------------------------------------------

    def all(self) -> list[Path]:
        """Complete states, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.root.iterdir()
            if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).exists()
        ]
        return [p for _, p in sorted(found)]

    def find(self, resume: str | None) -> Path | None:
        """``latest`` (None when nothing was saved yet) or a state folder."""
        if not resume:
            return None
        if resume == "latest":
            states = self.all()
            return states[-1] if states else None
        folder = Path(resume)
        if not (folder / STATE_FILE).exists():
            raise ResumeError(
                f"--resume {resume}: no {STATE_FILE} there. Give a folder like OUTPUT/state/step-000100, or 'latest'."
            )
        return folder

    def load(
        self, accelerator: Any, model: torch.nn.Module, optimizer: Any, folder: Path
    ) -> TrainingPosition:
        """Restore weights, optimizer and RNG from ``folder``; returns where to continue."""
        position = self.position(folder)
        if (folder / "accelerate").is_dir() != _sharded(accelerator):
            raise ResumeError(
                f"cannot resume from {folder}: it was saved "
                f"{'with' if (folder / 'accelerate').is_dir() else 'without'} sharding (FSDP / "
                "DeepSpeed); resume with the same --distributed and accelerate config"
            )
        if _sharded(accelerator):
            accelerator.load_state(str(folder / "accelerate"))
        else:
            _load_weights(accelerator.unwrap_model(model), folder)
            optimizer.load_state_dict(
                torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
            )
            if self.ema is not None:
                self.ema.load(folder)
        restore_rng(torch.load(folder / "rng.pt", weights_only=True)[accelerator.process_index])
        self.saved_step = position.step
        return position

    def position(self, folder: Path) -> TrainingPosition:
        """The position saved in ``folder``, after checking its data layout is this run's."""
        saved = json.loads((folder / STATE_FILE).read_text())
        self._check_layout(saved["layout"], folder)
        return TrainingPosition(**saved["position"])

    def _check_layout(self, saved: dict[str, int], folder: Path) -> None:
        changed = [
            f"{k} {saved.get(k)} -> {v}" for k, v in self.layout.items() if saved.get(k) != v
        ]
        if changed:
            raise ResumeError(
                f"cannot resume from {folder}: the data layout changed ({'; '.join(changed)}), so the "
                "saved position would replay other samples. Resume with the same settings, or start a "
                "new run from the weights with --lora-checkpoint."
            )


def _gather(accelerator: Any, state: dict[str, Any]) -> list[dict[str, Any]]:
    if accelerator.num_processes == 1:
        return [state]
    from accelerate.utils import gather_object

    return gather_object([state])


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(folder / "trainable.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing = sorted(set(params) - set(saved))[:3] or sorted(set(saved) - set(params))[:3]
        raise ResumeError(
            f"the state in {folder} was saved with other trainable weights (e.g. {missing}); "
            "resume with the same --lora-* / --trainable-models settings."
        )
    for name, param in params.items():
        if saved[name].shape != param.shape:  # another --lora-rank: same names, other shapes
            raise ResumeError(
                f"{folder / 'trainable.safetensors'}: {name} has shape {tuple(saved[name].shape)}, "
                f"the model's {tuple(param.shape)}; resume with the same --lora-rank."
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name].to(param.device, param.dtype))
