"""User-facing exceptions, all in one place.

Every error a user can cause (a bad flag, bad data, a missing plugin, a missing weight file)
is raised as a subclass of :class:`DiffSynthError`. Its message is one or two sentences that
say what went wrong and what to do. Only the CLI turns these into click errors; library code
raises them and lets callers decide. Under ``DIFFSYNTH_DEBUG=1`` the CLI re-raises them with
the full traceback.
"""

from __future__ import annotations


class DiffSynthError(Exception):
    """Base class of every error a user can cause and fix."""


# --- plugins and registry ---------------------------------------------------------------


class PluginError(DiffSynthError):
    """A plugin could not be loaded, or it broke a rule of the plugin system."""


class BrokenPluginError(PluginError):
    """A command needs a plugin that failed to load; carries the plugin's recorded error."""


class DuplicateFamilyError(PluginError):
    """Two plugins registered a model family under the same name."""


class UnknownModelError(DiffSynthError):
    """``--model NAME`` names no installed model family."""


class UnknownLossError(DiffSynthError):
    """``--loss NAME`` names no registered loss."""


class UnknownFormatError(DiffSynthError):
    """An export format (``--lora-format``) that no plugin converts to."""


# --- configuration and loading --------------------------------------------------------------


class ConfigError(DiffSynthError):
    """A flag or config-file value is invalid (bad type, out of range, unknown key)."""


class MissingDependencyError(ConfigError):
    """An optional package a feature needs is not installed; the message names the pip command."""


class ModelFileError(DiffSynthError):
    """A weight file is missing, unreadable, or in a refused format (pickle without opt-in)."""


class PickleRefusedError(ModelFileError):
    """A ``.bin``/``.pt``/``.ckpt``/``.pth`` file was found but pickle loading was not allowed."""


# --- data -----------------------------------------------------------------------------


class DatasetError(DiffSynthError):
    """The dataset as a whole is unusable: no metadata, a missing column, no valid rows."""


class BadSampleError(DiffSynthError):
    """One sample cannot be loaded (missing, corrupt, too large, outside the dataset folder).

    Raised per sample; the dataset's bad-sample policy decides whether it is counted and
    skipped or stops the run.
    """

    def __init__(
        self, message: str, *, row: int | None = None, path: str | None = None, kind: str | None = None
    ):
        super().__init__(message)
        self.row = row
        self.path = path
        self.kind = kind


# --- training -------------------------------------------------------------------------


class TrainingError(DiffSynthError):
    """Training cannot go on (for example a NaN loss); the last good state has been kept."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite."""


class ResumeError(TrainingError):
    """``--resume`` points at no usable training state."""
