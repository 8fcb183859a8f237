"""A bad sample under on_bad_sample="error" reads the same from a DataLoader worker as in the
main process: its own one line, not torch's "Caught ... in DataLoader worker" traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from diffsynth_core.data import UnifiedDataset, collate_samples
from diffsynth_core.data.bad_samples import SampleLoadError
from diffsynth_core.errors import BadSampleError

from .media import solid, write_csv

MESSAGE = "row 1, column 'image' (lost.png): missing: file does not exist"


@pytest.fixture
def strict(tmp_path: Path) -> UnifiedDataset:
    solid(tmp_path / "a.png", (32, 32))
    write_csv(tmp_path / "m.csv", "prompt,image", "p,a.png", "p,lost.png")
    return UnifiedDataset(tmp_path, tmp_path / "m.csv", on_bad_sample="error")


def first_error(dataset: UnifiedDataset, num_workers: int) -> BadSampleError:
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers, collate_fn=collate_samples)
    with pytest.raises(BadSampleError) as caught:
        for _ in loader:
            pass
    return caught.value


def test_the_worker_error_is_the_sample_error_itself(strict: UnifiedDataset) -> None:
    direct = first_error(strict, num_workers=0)
    from_worker = first_error(strict, num_workers=1)
    assert str(direct) == str(from_worker) == MESSAGE
    assert isinstance(from_worker, SampleLoadError) and from_worker.worker_traceback is not None
    assert "in DataLoader worker process 0" in from_worker.worker_traceback  # kept for debugging
    assert direct.worker_traceback is None


def test_a_message_that_only_looks_wrapped_is_kept() -> None:
    assert str(SampleLoadError("Caught a cold")) == "Caught a cold"
