"""What a failing or stuck DataLoader worker reports.

* A sample that raises while it is built (a bad image, a bug in a transform) becomes a :class:`SampleError` naming
  the sample: its index in the dataset, its image id and file, and the original error (chained; inside a worker
  process PyTorch re-raises it in the main process with the worker's traceback). With mosaic, the tile that failed
  is named, not only the sample that drew it.
* A worker that sends no batch for ``worker_timeout`` seconds (``data.worker_timeout``; a read hung on a network
  filesystem, a deadlock in a library) stops the epoch with a :class:`WorkerTimeoutError` saying which batch of
  the epoch was awaited and which config key sets the limit, instead of waiting forever.
"""
from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset

from detector.errors import DatasetError

DEFAULT_WORKER_TIMEOUT = 600.0
"""Seconds a loader waits for a worker's batch by default: far above what a batch of even large images takes to
build, short enough that a hung run stops within the hour rather than holding its GPU for days."""
_TORCH_TIMEOUT = "DataLoader timed out after"


class SampleError(DatasetError):
    """Building sample ``index`` of a dataset failed; the message names the sample and the original error.

    Attributes ``index``, ``image_id`` and ``path`` are set where known (None otherwise). Constructible from the
    message alone, as PyTorch re-raises a worker's exception in the main process.
    """

    index: int | None = None
    image_id: int | None = None
    path: str | None = None


class WorkerTimeoutError(RuntimeError):
    """No batch came from the DataLoader workers within ``data.worker_timeout`` seconds."""


def describe_sample(dataset: Dataset, index: int) -> tuple[str, int | None, str | None]:
    """``("sample 5 (image id 42, /data/x.jpg)", 42, "/data/x.jpg")``: the sample as a message names it.

    Image id and file come from ``dataset.records[index]`` (every :class:`~detector.data.base.DetectionDataset`);
    a dataset without records is named by index only.
    """
    records = getattr(dataset, "records", None)
    try:
        record = records[index] if records is not None else None
    except (IndexError, TypeError):
        record = None
    if record is None:
        return f"sample {index}", None, None
    return f"sample {index} (image id {record.image_id}, {record.path})", record.image_id, record.path


def sample_error(dataset: Dataset, index: int, err: BaseException, role: str = "") -> SampleError:
    """The :class:`SampleError` for ``err`` raised while building sample ``index`` of ``dataset`` (raise it
    ``from err``). ``role`` says how the sample was used, e.g. ``"a mosaic tile of sample 3"``."""
    name, image_id, path = describe_sample(dataset, index)
    role = f" ({role})" if role else ""
    error = SampleError(f"{name}{role}: {type(err).__name__}: {err}")
    error.index, error.image_id, error.path = index, image_id, path
    error.file, error.line = path, None
    return error


class TimedDataLoader(DataLoader):
    """A DataLoader whose worker timeout (``timeout=``, seconds, 0 = none) raises :class:`WorkerTimeoutError`
    naming the batch awaited and ``data.worker_timeout``. With ``num_workers=0`` there is no timeout."""

    def __iter__(self) -> Iterator:
        batches = super().__iter__()
        awaited = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as err:
                if not str(err).startswith(_TORCH_TIMEOUT):
                    raise
                raise WorkerTimeoutError(
                    f"no batch from the {self.num_workers} DataLoader worker(s) within {self.timeout:g} s "
                    f"(data.worker_timeout) while waiting for batch {awaited + 1} of {len(self)} of this epoch: a "
                    f"worker is stuck building a sample (an image read hung on a network filesystem, a deadlock in "
                    f"a library); raise data.worker_timeout if samples are only slow, or set it to 0 to wait forever"
                ) from None
            awaited += 1
            yield batch
