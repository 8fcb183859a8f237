"""UnifiedDataset: metadata rows turned into samples through data operators.

    dataset = UnifiedDataset(
        base_path="data/example_image_dataset",
        metadata_path="data/example_image_dataset/metadata.csv",
        repeat=50,
        data_file_keys="image",
        main_data_operator=UnifiedDataset.default_image_operator(
            base_path="data/example_image_dataset", height=512, width=512,
        ),
    )
    sample = dataset[0]  # {"prompt": "...", "image": <PIL.Image 512x512>}

A sample that cannot be loaded never crashes a DataLoader worker with a bare traceback: it is
turned into a :class:`BadSampleError` carrying its row and path, then either skipped and
recorded (``on_bad_sample="skip"``) or raised (``"error"``).

A ``caption_transform`` (:class:`~.captions.CaptionTransform`: dropout, tag shuffling, a
trigger word) changes each sample's ``prompt`` as a function of the seed, the epoch (set by
the training loop through :meth:`UnifiedDataset.set_epoch`) and the sample's index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import BadSampleError, ConfigError, DatasetError, DiffSynthError
from .bad_samples import BadRecord, BadSampleLog, SampleLoadError, describe, make_record
from .captions import CaptionTransform
from .files import is_empty_value
from .folder import DEFAULT_CAPTION_EXTENSION, check_caption_extension, scan_folder
from .images import DEFAULT_PIXEL_LIMIT
from .metadata import Row, check_columns, read_metadata
from .operators import Chain, ImageCropAndResize, LoadImage, LoadVideo, ToAbsolutePath
from .probe import ColumnProbe, row_target_sizes

__all__ = ["BadSampleLog", "SampleBatch", "UnifiedDataset", "collate_samples", "split_bad"]

Operator = Callable[[Any], Any]
Sample = dict[str, Any]
BAD_POLICIES = ("skip", "error")


class SampleBatch(list[dict[str, Any] | None]):
    """The samples a DataLoader fetched for one batch, plus the records of the bad ones.

    ``__getitem__`` can only return None for a bad sample; the record has to reach the collate
    function some other way, and this list is that way (it is built in the worker process).
    """

    def __init__(self, items: Sequence[Sample | None] = (), bad_records: Sequence[BadRecord] = ()):
        super().__init__(items)
        self.bad_records: list[BadRecord] = list(bad_records)


def _keys(data_file_keys: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(data_file_keys, str):
        return tuple(k.strip() for k in data_file_keys.split(",") if k.strip())
    return tuple(data_file_keys)


class UnifiedDataset(Dataset[dict[str, Any] | None]):
    """Samples from a csv/json/jsonl metadata file, or a folder of media with .txt captions."""

    def __init__(
        self,
        base_path: str | os.PathLike[str],
        metadata_path: str | os.PathLike[str] | None = None,
        repeat: int = 1,
        data_file_keys: str | Sequence[str] = ("image",),
        main_data_operator: Operator | None = None,
        special_operator_map: Mapping[str, Operator] | None = None,
        max_data_items: int | None = None,
        *,
        required_columns: Sequence[str] = ("prompt",),
        on_bad_sample: str = "skip",
        caption_extension: str = DEFAULT_CAPTION_EXTENSION,
        caption_transform: CaptionTransform | None = None,
    ):
        if on_bad_sample not in BAD_POLICIES:
            raise ConfigError(f"on_bad_sample must be one of {BAD_POLICIES}, not {on_bad_sample!r}")
        if not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"repeat must be a whole number >= 1, not {repeat!r}")
        if max_data_items is not None and (not isinstance(max_data_items, int) or max_data_items < 1):
            raise ConfigError(f"max_data_items must be a whole number >= 1, not {max_data_items!r}")
        # the seed's epoch length: the rows (repeated) cycle to fill it, or are cut short
        self.max_data_items = max_data_items
        self.base_path = Path(base_path)
        if not self.base_path.is_dir():
            raise DatasetError(f"dataset folder {self.base_path} does not exist")
        self.metadata_path = Path(metadata_path) if metadata_path is not None else None
        self.repeat, self.on_bad_sample = repeat, on_bad_sample
        self.data_file_keys = _keys(data_file_keys)
        self.main_data_operator = main_data_operator or self.default_image_operator(base_path)
        self.special_operator_map = dict(special_operator_map or {})
        self.required_columns = tuple(required_columns)
        self.caption_extension = check_caption_extension(caption_extension)
        self.notes: list[str] = []  # what did not pair in a captioned folder (see .folder)
        self.rows = self._load_rows(self.required_columns)
        self.bad_records: list[BadRecord] = []  # skips seen by direct indexing in this process
        self.caption_transform = caption_transform
        self.epoch = 0  # the epoch whose captions are drawn (set_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the captions of ``epoch`` (the loop calls it before each epoch's DataLoader)."""
        self.epoch = epoch

    def _load_rows(self, required: tuple[str, ...]) -> list[Row]:
        if self.metadata_path is None:
            column = self.data_file_keys[0] if self.data_file_keys else "image"
            scan = scan_folder(self.base_path, column, self.caption_extension)
            rows, source, self.notes = scan.rows, f"folder {self.base_path}", scan.notes()
        else:
            rows, source = read_metadata(self.metadata_path), str(self.metadata_path)
        if not rows:
            raise DatasetError(
                f"{source} holds no samples; add rows to the metadata file (or, for a folder, "
                f"images with same-named {self.caption_extension} captions)"
            )
        files = tuple(k for k in self.required_file_keys() if k not in required)
        check_columns(rows, required + files, source)
        return rows

    def required_file_keys(self) -> list[str]:
        """The data file columns every row must fill: the first (main) one and the required.

        The others are optional (a VACE mask, a reference image): a row may leave them out or
        empty, and only the ones it fills are loaded.
        """
        return [
            k for i, k in enumerate(self.data_file_keys) if i == 0 or k in self.required_columns
        ]

    # -- default operators (the seed's static helpers) ---------------------------------------

    @staticmethod
    def default_image_operator(
        base_path: str | os.PathLike[str],
        max_pixels: int = 1024 * 1024,
        height: int | None = None,
        width: int | None = None,
        height_division_factor: int = 16,
        width_division_factor: int = 16,
        *,
        pixel_limit: int = DEFAULT_PIXEL_LIMIT,
    ) -> Chain:
        """Path -> checked absolute path -> RGB image -> resized by the resize rule."""
        return (
            ToAbsolutePath(base_path)
            >> LoadImage(pixel_limit)
            >> ImageCropAndResize(
                height, width, max_pixels, height_division_factor, width_division_factor
            )
        )

    @staticmethod
    def default_video_operator(
        base_path: str | os.PathLike[str],
        max_pixels: int = 1920 * 1080,
        height: int | None = None,
        width: int | None = None,
        height_division_factor: int = 16,
        width_division_factor: int = 16,
        num_frames: int = 81,
        time_division_factor: int = 4,
        time_division_remainder: int = 1,
        frame_rate: float | None = None,
        *,
        pixel_limit: int = DEFAULT_PIXEL_LIMIT,
    ) -> Chain:
        """Path -> checked absolute path -> list of frames, each resized by the resize rule."""
        resize = ImageCropAndResize(
            height, width, max_pixels, height_division_factor, width_division_factor
        )
        return ToAbsolutePath(base_path) >> LoadVideo(
            num_frames,
            time_division_factor,
            time_division_remainder,
            frame_rate,
            resize,
            pixel_limit,
        )

    # -- samples --------------------------------------------------------------------------------

    def __len__(self) -> int:
        if self.max_data_items is not None:
            return self.max_data_items
        return len(self.rows) * self.repeat

    def row_of(self, index: int) -> int:
        """The metadata row behind dataset index ``index`` (indices repeat every len(rows))."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        return index % len(self.rows)

    def operator_for(self, column: str) -> Operator:
        """The operator that loads ``column``: its special operator, else the main one."""
        return self.special_operator_map.get(column, self.main_data_operator)

    def file_columns(self, row: Row) -> list[str]:
        """Columns of ``row`` to load: the required file keys, plus optional ones it fills."""
        required = self.required_file_keys()
        optional = dict.fromkeys(
            c for c in (*self.data_file_keys, *self.special_operator_map) if c not in required
        )
        return required + [c for c in optional if not is_empty_value(row.get(c))]

    def load(self, index: int) -> Sample:
        """Sample ``index``; raises BadSampleError (with row and path) if it cannot be loaded."""
        row_index = self.row_of(index)
        row = self.rows[row_index]
        sample: Sample = dict(row)
        for column in self.file_columns(row):
            try:
                sample[column] = self.operator_for(column)(row.get(column))
            except DiffSynthError as error:
                if not isinstance(error, BadSampleError):
                    raise  # a configuration problem (e.g. imageio missing) stops the run
                raise self._contextual(error, index, row_index, column, row.get(column)) from error
            except Exception as error:  # any other per-sample failure gets the same context
                raise self._contextual(error, index, row_index, column, row.get(column)) from error
        transform = self.caption_transform
        if transform is not None and transform.active and isinstance(sample.get("prompt"), str):
            sample["prompt"] = transform.caption(sample["prompt"], self.epoch, index)
        return sample

    def _contextual(
        self, error: Exception, index: int, row: int, column: str, value: Any
    ) -> BadSampleError:
        record = make_record(error, index=index, row=row, column=column, value=value)
        wrapped = SampleLoadError(
            describe(record), row=row, path=record["path"], kind=record["kind"]
        )
        wrapped.record = record  # type: ignore[attr-defined]
        return wrapped

    def try_load(self, index: int) -> tuple[Sample | None, BadRecord | None]:
        """(sample, None), or under the skip policy (None, record) for a bad sample."""
        try:
            return self.load(index), None
        except BadSampleError as error:
            if self.on_bad_sample == "error":
                raise
            record = getattr(error, "record", None)
            return None, record or make_record(error, index=index, row=-1, column=None, value=None)

    def __getitem__(self, index: int) -> Sample | None:
        sample, record = self.try_load(index)
        if record is not None:
            self.bad_records.append(record)
        return sample

    def __getitems__(self, indices: Sequence[int]) -> SampleBatch:
        """What a DataLoader fetches per batch: samples plus the records of the bad ones."""
        batch = SampleBatch()
        for index in indices:
            sample, record = self.try_load(index)
            batch.append(sample)
            if record is not None:
                batch.bad_records.append(record)
        return batch

    def target_sizes(self, column: str | None = None) -> list[tuple[int, int] | None]:
        """Each sample's (width, height) after the resize rule, from file headers only.

        ``column`` defaults to the first data file key; None where the header can't be read.
        """
        column = column or next(iter(self.data_file_keys), None)
        if column is None:
            raise ConfigError("target_sizes() needs a column: this dataset has no data_file_keys")
        probe = ColumnProbe.of(self.operator_for(column), self.base_path)
        sizes = row_target_sizes(self.rows, column, probe)
        return [sizes[i % len(sizes)] for i in range(len(self))]


def collate_samples(
    samples: Sequence[Sample | None], unwrap_single: bool | None = None
) -> dict[str, Any]:
    """Collate fetched samples, dropping bad ones (None); their records go under ``"__bad__"``.

    ``unwrap_single`` (default: True when one sample was fetched) returns a lone sample's own
    fields, as a batch size of 1 expects (``data["image"].size``); otherwise every column is a
    list. A training loop with batch size above 1 should pass ``unwrap_single=False`` (e.g.
    through ``functools.partial``) so a last or bucketed batch of one keeps the list shape.
    """
    bad = list(getattr(samples, "bad_records", ()))
    good = [s for s in samples if s is not None]
    unwrap = len(samples) == 1 if unwrap_single is None else unwrap_single
    if not good:
        return {"__bad__": bad}
    if unwrap and len(good) == 1:
        return {**good[0], "__bad__": bad}
    keys = list(dict.fromkeys(k for sample in good for k in sample))
    return {**{k: [s.get(k) for s in good] for k in keys}, "__bad__": bad}


def split_bad(batch: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[BadRecord]]:
    """(data without ``"__bad__"``, bad records); data is None when no good sample is left."""
    data = {k: v for k, v in batch.items() if k != "__bad__"}
    return (data or None), list(batch.get("__bad__", ()))
