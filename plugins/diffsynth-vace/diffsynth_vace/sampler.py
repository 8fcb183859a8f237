"""The inference sampler: diffusers' UniPC on flow sigmas, as in the official repository.

Training keeps the core ``FlowMatchScheduler`` (Wan's static shift 5, uniform timesteps,
DiffSynth-Studio's loss weights); generation uses the sampler diffusers' ``WanVACEPipeline``
ships with (UniPC, order 2, ``flow_shift`` 3 for 480p, 5 for 720p), so a diffsynth video and a
diffusers video from the same weights and seed are the same video. A new scheduler is made
for every call: UniPC keeps the previous model outputs as state, and a generation in the
middle of training (sample videos) must not touch the training schedule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# scheduler/scheduler_config.json of Wan-AI/Wan2.1-VACE-1.3B-diffusers (the values that matter)
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "solver_order": 2,
    "prediction_type": "flow_prediction",
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "final_sigmas_type": "zero",
    "timestep_spacing": "linspace",
}


def read_scheduler_config(folder: Path | None) -> dict[str, Any]:
    """``folder/scheduler_config.json`` when it exists, else the official defaults."""
    path = None if folder is None else Path(folder) / "scheduler_config.json"
    if path is None or not path.is_file():
        return dict(DEFAULT_SCHEDULER_CONFIG)
    return json.loads(path.read_text(encoding="utf-8"))


def make_sampler(config: Mapping[str, Any], flow_shift: float | None = None) -> Any:
    """A fresh ``UniPCMultistepScheduler`` from ``config`` (``flow_shift`` overrides)."""
    from diffusers import UniPCMultistepScheduler

    overrides = {} if flow_shift is None else {"flow_shift": flow_shift}
    return UniPCMultistepScheduler.from_config(dict(config), **overrides)
