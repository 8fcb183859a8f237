"""EMA of the trainable weights (``--ema-decay``).

After every optimizer step ``ema = decay * ema + (1 - decay) * w`` (``torch.lerp``, in fp32
whatever the weights' dtype, on the weights' device). The average starts at the weights the run
starts from. It is written:

* beside each checkpoint as ``<name>-ema.safetensors`` (same format, names and metadata as
  the checkpoint, through the same ``ModelLogger.write``), pruned with it by ``keep_last``;
* in each training state as ``ema.safetensors`` (:class:`~.state.TrainingStates` saves and
  loads it), so a resumed run's EMA is the unbroken run's, bit for bit.

Sample images are made with the EMA weights swapped in (:meth:`EmaWeights.swapped_in`); the
trained weights are put back bit for bit afterwards. Every process keeps its own copy (the
weights are the same on every process under DDP); sharded training (FSDP, DeepSpeed) is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ResumeError

EMA_STATE_FILE = "ema.safetensors"


def ema_path(checkpoint: Path) -> Path:
    """``final.safetensors`` -> ``final-ema.safetensors`` (beside it)."""
    return checkpoint.with_name(f"{checkpoint.stem}-ema{checkpoint.suffix}")


class EmaWeights:
    """The moving average of a model's trainable parameters, by parameter name."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ConfigError(f"--ema-decay must be between 0 and 1 (e.g. 0.999), not {decay}")
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    @classmethod
    def create(cls, decay: float | None, accelerator: Any, model: Any) -> EmaWeights | None:
        """The EMA of ``model`` (prepared) when ``decay`` is given, else None."""
        if decay is None:
            return None
        if str(accelerator.distributed_type).rsplit(".", 1)[-1] in ("FSDP", "DEEPSPEED"):
            raise ConfigError(
                "--ema-decay keeps a full copy of the trained weights per process; it is not "
                "supported with FSDP or DeepSpeed sharding"
            )
        return cls(accelerator.unwrap_model(model), decay)

    @torch.no_grad()
    def update(self, skip: torch.Tensor | None = None) -> None:
        """One step of the average (after ``optimizer.step()``). ``skip``: a 0-dim tensor on
        the device, 1 when the optimizer skipped this step's update (a bad step, found on the
        device: :mod:`.step_checks`); the average then stays as it was, without the host
        reading the flag."""
        weight: float | torch.Tensor = 1.0 - self.decay
        if skip is not None:
            weight = (1.0 - skip) * (1.0 - self.decay)  # lerp by 0: the average unchanged
        for name, param in self.params.items():
            self.shadow[name].lerp_(param.detach().float(), weight)

    # -- the training state ---------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().to("cpu").contiguous() for n, t in self.shadow.items()}

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(folder / EMA_STATE_FILE))

    def load(self, folder: Path) -> None:
        """Restore the average saved in a training state folder."""
        from safetensors.torch import load_file

        file = folder / EMA_STATE_FILE
        if not file.is_file():
            raise ResumeError(
                f"{folder} holds no {EMA_STATE_FILE}: that run was trained without --ema-decay"
            )
        saved = load_file(str(file))
        if set(saved) != set(self.shadow):
            raise ResumeError(f"{file} was saved for other trainable weights")
        for name, tensor in saved.items():
            self.shadow[name].copy_(tensor.to(self.shadow[name].device))

    # -- using the average ----------------------------------------------------------------

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside, the trainable parameters hold the average; the trained values come back."""
        kept = {n: p.detach().clone() for n, p in self.params.items()}
        try:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(self.shadow[name].to(param.dtype))
            yield
        finally:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(kept[name])

    def save_beside(
        self,
        accelerator: Any,
        model: Any,
        model_logger: Any,
        checkpoint: Path | None,
        kind: str,
        step: int,
        epoch: int,
    ) -> Path | None:
        """Write the average beside ``checkpoint`` (None: nothing was saved), as the logger
        writes a checkpoint (collective: every process calls it)."""
        if checkpoint is None:
            return None
        path = ema_path(checkpoint)
        with self.swapped_in():
            state = accelerator.get_state_dict(model)
            if accelerator.is_main_process:
                model_logger.write(accelerator.unwrap_model(model), state, kind, step, epoch, path=path)
        accelerator.wait_for_everyone()
        return path


def ema_weights(ema: EmaWeights | None) -> Any:
    """The context that swaps the average in, or nothing without ``--ema-decay``."""
    return ema.swapped_in() if ema is not None else nullcontext()
