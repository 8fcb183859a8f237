"""The data package: datasets, data operators, video I/O, aspect-ratio buckets.

Names are loaded on first use, so ``import diffsynth_core.data`` stays cheap (torch is only
imported when the dataset is).

    from diffsynth_core.data import UnifiedDataset, collate_samples, validate
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bad_samples import BadSampleLog
    from .buckets import BucketBatchSampler
    from .dataset import UnifiedDataset, collate_samples, split_bad
    from .validation import ValidationReport, validate

_EXPORTS = {
    "UnifiedDataset": "dataset",
    "collate_samples": "dataset",
    "split_bad": "dataset",
    "BadSampleLog": "bad_samples",
    "validate": "validation",
    "ValidationReport": "validation",
    "BucketBatchSampler": "buckets",
}

__all__ = [
    "BadSampleLog",
    "BucketBatchSampler",
    "UnifiedDataset",
    "ValidationReport",
    "collate_samples",
    "split_bad",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value
