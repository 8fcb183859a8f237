"""Experiment trackers (``--report-to``) through accelerate's tracking API.

No tracker is written by hand: the names are accelerate's (``LOGGER_TYPE_TO_CLASS``), the
Accelerator is built with ``log_with`` and a logging folder (``OUTPUT/logs``), and
:class:`RunTrackers` calls ``init_trackers``, ``accelerator.log`` and each tracker's
``log_images``. The run's name (the output folder's name) is the trackers' project: TensorBoard
writes into ``OUTPUT/logs/<name>/``. The run's settings (``training_args.json``'s, or a
seed-style run's options) are the trackers' hyperparameters (:func:`tracker_config`).

Without ``--report-to`` the run reports to TensorBoard when it is installed and says so in a
note when it is not; a tracker asked for by name that is not installed is an error before the
run starts. ``none`` turns trackers off (``logs/metrics.csv`` is always written).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# what --report-to accepts besides accelerate's names
OFF = "none"
# pip names of the trackers whose package name differs from accelerate's tracker name
PACKAGES = {"comet_ml": "comet-ml"}


def known_trackers() -> list[str]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return sorted(LOGGER_TYPE_TO_CLASS)


def installed_trackers() -> set[str]:
    from accelerate.tracking import get_available_trackers

    return {str(t) for t in get_available_trackers()}


def resolve_report_to(report_to: str | None) -> tuple[list[str], list[str]]:
    """(tracker names to build the Accelerator with, notes) for ``--report-to``.

    None: TensorBoard when installed (a note otherwise). A named tracker that accelerate does
    not know or whose package is missing is a ConfigError naming what to do.
    """
    installed = installed_trackers()
    if report_to is None:
        if "tensorboard" in installed:
            return ["tensorboard"], []
        note = "TensorBoard is not installed: logs/metrics.csv only (pip install tensorboard)"
        return [], [note]
    names = [n.strip().lower() for n in report_to.split(",") if n.strip()]
    if names == [OFF]:
        return [], []
    known = known_trackers()
    for name in names:
        if name not in known:
            raise ConfigError(
                f"--report-to {name}: not a tracker accelerate knows; one of {', '.join(known)}, "
                f"or {OFF}"
            )
        if name not in installed:
            package = PACKAGES.get(name, name)
            raise ConfigError(
                f"--report-to {name}: {package} is not installed (pip install {package}, or "
                f"pip install 'diffsynth-core[{name}]'), or leave {name} out of --report-to"
            )
    return list(dict.fromkeys(names)), []


def accelerator_kwargs(report_to: str | None, output: Path) -> tuple[dict[str, Any], list[str]]:
    """The ``Accelerator(...)`` keywords for the run's trackers, and the notes."""
    names, notes = resolve_report_to(report_to)
    if not names:
        return {}, notes
    return {"log_with": names, "project_dir": str(Path(output) / "logs")}, notes


def tracker_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The run's settings as the trackers' hyperparameters (``init_trackers(config=...)``):
    nested mappings flattened to ``a/b`` keys, and every value a number, a bool or a string
    (TensorBoard's hparams take nothing else): None is ``"none"``, a list its items joined by
    commas. The command line is left out (the settings say it)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key == "command":
            continue
        if isinstance(value, Mapping):
            flat.update(tracker_config(value, prefix=f"{name}/"))
        elif value is None:
            flat[name] = "none"
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = str(value)
    return flat


class RunTrackers:
    """The trackers of one run: those the Accelerator was built with (``log_with``), started
    on the main process when the run starts and finished at its end. A seed-style script
    that builds ``Accelerator()`` without ``log_with`` gets the CSV log only."""

    def __init__(
        self,
        accelerator: Any,
        output: Path,
        start_step: int,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.accelerator = accelerator
        if accelerator is None or not accelerator.log_with:
            self.accelerator = None
            return
        if accelerator.logging_dir is None:
            accelerator.project_configuration.set_directories(str(Path(output) / "logs"))
        # resumed: hide the events a killed run logged after the resumed step (TensorBoard
        # appends a new event file to the same run folder)
        init = {"tensorboard": {"purge_step": start_step + 1}} if start_step else {}
        config = tracker_config(hyperparameters) if hyperparameters else None
        accelerator.init_trackers(
            Path(output).resolve().name or "diffsynth", config=config, init_kwargs=init
        )

    @property
    def active(self) -> list[Any]:
        return list(self.accelerator.trackers) if self.accelerator is not None else []

    def log(self, values: dict[str, float], step: int) -> None:
        if self.active:
            self.accelerator.log(values, step=step)

    def log_images(self, images: dict[str, Any], step: int) -> None:
        """``images``: key -> PIL image; sent to every tracker that takes images."""
        if not self.active or not images:
            return
        import numpy as np

        for tracker in self.active:
            if not hasattr(tracker, "log_images"):
                continue
            batches = {key: np.asarray(image.convert("RGB"))[None] for key, image in images.items()}
            extra = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images(batches, step=step, **extra)

    def close(self) -> None:
        """Finish every tracker (not ``end_training``: that also ends the process group)."""
        for tracker in self.active:
            tracker.finish()
        if self.accelerator is not None:
            self.accelerator.trackers = []
