"""The estimate against real tensors on the CPU (tests/memory, bench/estimate_cpu.py).

:func:`measured_peak` builds the same model as the estimate, with real weights (random,
so keep it to a few blocks), and runs the same step under the same tracker on the CPU:
the measured peak of a ``units``-unit model, to compare with the estimate extrapolated to
``units`` from fake runs of one and two.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .estimate import Estimator, MemorySettings
from .fake import tracked_step


def measured_peak(estimator: Estimator, s: MemorySettings, units: int) -> int:
    """Bytes at the peak of one real step of the ``units``-unit model with settings ``s``
    (bf16 or fp32 base; the analytic settings -- precision, swap, cache -- do not apply)."""
    from ..training.module import set_gradient_checkpointing

    dtype = torch.float32 if s.weight_bytes == 4 else torch.bfloat16
    torch.manual_seed(0)
    model = estimator.build_model(s, units, dtype)
    set_gradient_checkpointing(model, s.gradient_checkpointing)
    inputs = estimator.spec.inputs(model, s.shape, dtype)
    peak = tracked_step(model, inputs, s.optimizer, None if dtype == torch.float32 else dtype)
    return sum(peak.values())


def estimated_peak(estimator: Estimator, s: MemorySettings, units: int) -> int:
    """The estimate's step peak (cache on: no encoders) for a ``units``-unit model."""
    scaled = Estimator(replace(estimator.spec, units=units), estimator.block_lists)
    scaled._runs = estimator._runs  # the traces of one and two units are the same
    return scaled.estimate(s.but(cache=True)).peak
