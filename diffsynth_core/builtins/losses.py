"""Built-in plugin: the flow-matching SFT loss (``--loss sft``; its ``--loss-type``,
``--loss-weighting`` and ``--timestep-sampling`` are read by :mod:`..training.losses`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..plugins import hookimpl


def _sft(pipe: Any, **inputs: Any) -> Any:
    from ..training.losses import FlowMatchSFTLoss

    return FlowMatchSFTLoss(pipe, **inputs)


@hookimpl
def diffsynth_register_losses(register: Callable[..., None]) -> None:
    register(
        "sft",
        _sft,
        description="flow-matching supervised fine-tuning: weighted distance (--loss-type) to noise - x0",
    )
