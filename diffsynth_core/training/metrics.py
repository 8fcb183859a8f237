"""What a run reports as it goes: progress bar, ``logs/metrics.csv``, TensorBoard, ``loss.png``.

Only the main process writes or draws. The CSV is always written, one row per optimizer
step, flushed as written (a killed run keeps its log). The rows arrive when the host reads the
losses (every ``--log-every`` steps and before each save: :mod:`.step_checks`), each with its
own step's time. On resume, rows past the resumed step are dropped so the log reads like one
unbroken run. The trackers (TensorBoard when installed, or ``--report-to``) are
accelerate's (:mod:`.trackers`); the plot needs matplotlib and is skipped with a note otherwise.

``logs/validation.csv`` holds the validation losses (:mod:`.validation`); ``loss.png`` shows
them beside the raw and the smoothed training loss.

Sampling (and anything else run inside :meth:`MetricsLog.paused`) shows in the bar's label
("sampling") and is left out of the step rate, the ETA and ``samples_per_s``: they measure
training alone.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import atomic_write, atomic_write_text
from .trackers import RunTrackers

FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s")
VALIDATION_FIELDS = ("step", "val_loss", "val_loss_ema")
SMOOTHING = 0.9  # of the plotted training loss (TensorBoard's debiased moving average)


class MetricsLog:
    """One row per optimizer step to CSV (and the trackers), plus the progress bar.

    ``accelerator``: whose trackers get the rows (None: CSV only); ``hyperparameters``: the
    run's settings, given to the trackers when they start."""

    def __init__(
        self,
        output_path: Path,
        enabled: bool,
        total_steps: int,
        start_step: int,
        progress: bool = True,
        accelerator: Any = None,
        hyperparameters: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.csv_path = Path(output_path) / "logs" / "metrics.csv"
        self.validation_path = self.csv_path.with_name("validation.csv")
        self._start_step: int | None = start_step  # None once validation.csv is started
        self.notes: list[str] = []
        self._last = time.perf_counter()
        self._handle: Any = None
        self._writer: Any = None
        self.trackers: RunTrackers | None = None
        self._bar: Any = None
        if enabled:
            self._open_csv(start_step)
            self.trackers = RunTrackers(accelerator, Path(output_path), start_step, hyperparameters)
            self._bar = self._open_bar(total_steps, start_step, progress)

    def _open_csv(self, start_step: int) -> None:
        _keep_rows(self.csv_path, FIELDS, start_step)
        self._handle = self.csv_path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=FIELDS)

    @staticmethod
    def _open_bar(total: int, start: int, progress: bool) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=start,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not progress,
        )

    def log(
        self,
        step: int,
        epoch: int,
        loss: float,
        lr: float,
        grad_norm: float | None,
        samples: int,
        ended: float | None = None,
    ) -> None:
        """Record one optimizer step (no-op on other processes); ``ended``: its end
        (``time.perf_counter()``) when it is logged later (default now)."""
        now = time.perf_counter() if ended is None else ended
        speed, self._last = samples / max(now - self._last, 1e-9), now
        if not self.enabled:
            return
        row: dict[str, int | str] = {
            "step": step,
            "epoch": epoch,
            "loss": f"{loss:.6g}",
            "lr": f"{lr:.6g}",
            "grad_norm": "" if grad_norm is None else f"{grad_norm:.6g}",
            "samples_per_s": f"{speed:.3g}",
        }
        self._writer.writerow(row)
        self._handle.flush()
        if self.trackers is not None:
            scalars = ("loss", "lr", "grad_norm", "samples_per_s")
            self.trackers.log({f"train/{k}": float(row[k]) for k in scalars if row[k] != ""}, step)
        self._bar.set_postfix(loss=row["loss"], lr=row["lr"], refresh=False)
        self._bar.update(1)

    def log_validation(
        self,
        step: int,
        loss: float,
        ema_loss: float | None = None,
        due: Callable[[int], bool] = lambda step: True,
    ) -> None:
        """Record a validation loss (and the EMA weights' one) to ``logs/validation.csv`` and
        the trackers' ``val/loss`` (main process). The file is started at the first validation;
        resumed, it keeps the earlier rows that ``due`` says an unbroken run has (not the
        previous start's end, when that was no regular evaluation)."""
        if not self.enabled:
            return
        if self._start_step is not None:
            _keep_rows(self.validation_path, VALIDATION_FIELDS, self._start_step, due)
            self._start_step = None
        row = {"step": step, "val_loss": f"{loss:.6g}",
               "val_loss_ema": "" if ema_loss is None else f"{ema_loss:.6g}"}  # fmt: skip
        with self.validation_path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=VALIDATION_FIELDS).writerow(row)
        if self.trackers is not None:
            scalars = {"val/loss": loss} | ({} if ema_loss is None else {"val/loss_ema": ema_loss})
            self.trackers.log(scalars, step)
        self.write(f"step {step}: validation loss {row['val_loss']}" + (
            f" (EMA weights {row['val_loss_ema']})" if ema_loss is not None else ""))

    @contextmanager
    def paused(self, label: str) -> Iterator[None]:
        """Show ``label`` in the bar while the body runs; its time counts as no training."""
        started = time.perf_counter()
        bar = self._bar if self._bar is not None and not self._bar.disable else None
        if bar is not None:
            bar.set_description_str(label, refresh=True)
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self._last += spent  # the next step's samples_per_s
            if bar is not None and self._bar is bar:
                # tqdm's rate and ETA come from start_t and last_print_t (as in tqdm.unpause)
                bar.start_t += spent
                bar.last_print_t += spent
                bar.set_description_str("train", refresh=True)

    def write(self, message: str) -> None:
        """A line above the progress bar (main process only; empty messages are dropped)."""
        if self.enabled and message:
            self._bar.write(message)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        # trained to the end: the trackers stay open for the final samples (close() ends them)
        self.close(trackers=exc[0] is not None)

    def close(self, trackers: bool = True) -> None:
        if self._handle is not None:
            self._handle.close()
        if self.trackers is not None and trackers:
            self.trackers.close()
            self.trackers = None
        if self._bar is not None:
            self._bar.close()
        self._handle = self._bar = None


def _keep_rows(
    path: Path,
    fields: tuple[str, ...],
    start_step: int,
    due: Callable[[int], bool] = lambda step: True,
) -> None:
    """Rewrite ``path`` with its header and the rows up to ``start_step`` (none at 0); the
    row of ``start_step`` itself only if ``due``."""
    rows = read_metrics(path) if start_step else []
    kept = [r for r in rows if int(r["step"]) < start_step or (int(r["step"]) == start_step and due(start_step))]
    lines = [",".join(fields)] + [",".join(str(r.get(f) or "") for f in fields) for r in kept]
    atomic_write_text(path, "\n".join(lines) + "\n")


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: a moving average, debiased so the first points are not pulled
    towards zero."""
    out, last = [], 0.0
    for i, value in enumerate(values, start=1):
        last = weight * last + (1 - weight) * value
        out.append(last / (1 - weight**i))
    return out


def read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row.get("step")]


def plot_loss(metrics_csv: Path, out: Path) -> str | None:
    """Draw the training loss (raw and smoothed) and the validation losses beside it
    (``validation.csv`` next to ``metrics_csv``) against step into ``out``; returns a note
    when it cannot."""
    rows = read_metrics(metrics_csv)
    validation = read_metrics(metrics_csv.with_name("validation.csv"))
    if not rows:
        return "no metrics logged: loss.png not drawn"
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: loss.png skipped (pip install matplotlib)"
    figure, axis = plt.subplots(figsize=(7, 4))
    steps, losses = [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]
    axis.plot(steps, losses, linewidth=0.8, alpha=0.35, color="tab:blue", label="training loss")
    axis.plot(steps, smoothed(losses), linewidth=1.5, color="tab:blue", label="training loss (smoothed)")
    for column, label, color in (("val_loss", "validation loss", "tab:orange"),
                                 ("val_loss_ema", "validation loss (EMA)", "tab:green")):  # fmt: skip
        shown = [r for r in validation if r.get(column)]
        if shown:
            axis.plot([int(r["step"]) for r in shown], [float(r[column]) for r in shown],
                      marker="o", markersize=3, linewidth=1.2, color=color, label=label)  # fmt: skip
    axis.legend(fontsize="small")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(out, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
    return None
