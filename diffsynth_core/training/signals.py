"""SIGINT / SIGTERM: finish the current optimizer step, save the state, then stop.

A cluster scheduler sends SIGTERM before it kills a job; Ctrl-C sends SIGINT. Either one
only sets a flag; the training loop checks it after each optimizer step, saves the training
state and returns, so ``--resume latest`` continues exactly there. A second Ctrl-C stops at
once (KeyboardInterrupt), for when saving itself hangs.

DataLoader workers ignore both signals (:func:`.batches.ignore_stop_signals`): a signal sent
to the whole process group (a terminal's Ctrl-C, ``kill -- -PGID``) reaches them too, and a
worker that died of it made the main process fail instead of saving. A KeyboardInterrupt that
reaches the CLI (Ctrl-C while loading, or the second Ctrl-C) exits with status 130.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SECOND_CTRL_C = "stopped at once by a second Ctrl-C; the last saved state is kept (--resume latest)"


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a stop request (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped = False  # set once every process agreed to stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt(SECOND_CTRL_C)
        self.signum = signum

    @property
    def name(self) -> str | None:
        """The signal that stopped the run (``SIGTERM``), if it did."""
        if not self.stopped:
            return None
        return (
            signal.Signals(self.signum).name
            if self.signum is not None
            else "a signal to another process"
        )

    def agreed(self, accelerator: Any, collective: bool = True) -> bool:
        """True on every process when any process was signalled (they must stop together).
        With several processes they agree by a collective read on the host; ``collective``
        False (a step at which the host reads nothing, see :mod:`.step_checks`) defers it."""
        if accelerator.num_processes == 1:
            self.stopped = self.signum is not None
        elif not collective:
            return self.stopped
        else:
            flag = torch.tensor([0.0 if self.signum is None else 1.0], device=accelerator.device)
            self.stopped = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
        return self.stopped
