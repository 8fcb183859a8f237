"""``diffsynth`` with the toy family installed, for tests that need a real process.

    python tests/training/toy_cli.py train --model toy --preset tiny ...

TOY_STEP_DELAY=<seconds> makes every training forward pass sleep that long, so a test can
signal the process mid-run (the sleep changes no number).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from diffsynth_core.cli.main import main
from diffsynth_core.testing import use_toy_plugin
from diffsynth_core.training.module import PipelineTrainingModule


def _slow_down(delay: float) -> None:
    forward = PipelineTrainingModule.forward

    def slow_forward(self: Any, data: Any) -> Any:
        time.sleep(delay)
        return forward(self, data)

    PipelineTrainingModule.forward = slow_forward  # type: ignore[method-assign]


if __name__ == "__main__":
    torch.set_num_threads(1)  # as the test process: bit-identical float sums
    if float(os.environ.get("TOY_STEP_DELAY", "0")) > 0:
        _slow_down(float(os.environ["TOY_STEP_DELAY"]))
    use_toy_plugin()
    main(sys.argv[1:])
