"""DataLoader workers: a sample that raises is named (index, image id, file, the original error), in the main process
and from a worker process, as a sample or as a mosaic tile; a worker that hangs stops the epoch after
``worker_timeout`` seconds with a message naming ``data.worker_timeout``."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest

from detector.data import DetectionInputs, YoloDataset, build_dataloader
from detector.data.transforms import AugmentConfig
from detector.data.workers import SampleError, WorkerTimeoutError

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
NAMES = [f"c{i}" for i in range(80)]
BAD = 2


class Faulty(YoloDataset):
    """The first 4 coco128 images; reading image ``BAD`` raises ZeroDivisionError, or sleeps ``sleep`` seconds.
    Module level, so that worker processes can unpickle it."""

    def __init__(self, sleep: float = 0.0) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().__init__(str(COCO128 / "images" / "train2017"), NAMES, max_images=4)
        self.sleep = sleep

    def __getitem__(self, index: int):
        if index == BAD:
            if not self.sleep:
                raise ZeroDivisionError("injected fault")
            time.sleep(self.sleep)
        return super().__getitem__(index)


def _loader(dataset, workers: int, train: bool = False, **kw):
    augment = AugmentConfig(mosaic=1.0) if train else None
    return build_dataloader(dataset, img_size=64, batch_size=2, train=train, augment=augment, workers=workers,
                            seed=0, shuffle=False, **kw)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_failing_sample_is_named(workers):
    """Batch 2 holds samples 2 and 3; sample 2 raises: the error names index 2, its image id (2: YOLO ids are
    positions in the sorted list), its file, and the original ZeroDivisionError; batch 1 arrived before it."""
    ds = Faulty()
    path = ds.records[BAD].path
    batches = iter(_loader(ds, workers))
    assert len(next(batches).metas) == 2
    with pytest.raises(SampleError) as caught:
        next(batches)
    text = str(caught.value)
    assert f"sample {BAD} (image id {BAD}, {path}): ZeroDivisionError: injected fault" in text
    if workers == 0:  # in the main process the original is chained; from a worker its traceback is in the text
        assert isinstance(caught.value.__cause__, ZeroDivisionError)
        assert (caught.value.index, caught.value.image_id, caught.value.path) == (BAD, BAD, path)
    else:
        assert "DataLoader worker process 0" in text


def test_a_failing_mosaic_tile_is_named():
    """Sample 0 is sound, but its mosaic reads 3 of the 4 images at random: within 20 seeds one draws image 2 (all
    would miss it with probability (3/4)^60), and the failure names image 2 as a tile of sample 0."""
    ds = Faulty()
    inputs = DetectionInputs(ds, 64, AugmentConfig(mosaic=1.0))
    message = None
    for seed in range(20):
        try:
            inputs[(0, seed)]
        except SampleError as err:
            message = str(err)
            break
    expected = f"sample {BAD} (image id {BAD}, {ds.records[BAD].path}) (a mosaic tile of sample 0): ZeroDivisionError"
    assert message is not None and message.startswith(expected), message


def test_a_good_sample_is_unchanged_by_the_wrapper():
    """Control: the same loader over samples 0, 1 (no fault) yields both batches' images."""
    ds = Faulty()
    ds.records = ds.records[:2]
    batch = next(iter(_loader(ds, 0)))
    assert tuple(batch.images.shape) == (2, 3, 64, 64) and [m.image_id for m in batch.metas] == [0, 1]


def test_a_stuck_worker_times_out_with_a_message():
    """Sample 2 sleeps 30 s, the timeout is 1 s: the second batch fails after about a second with a message naming
    data.worker_timeout and the batch awaited, long before the sleep ends."""
    loader = _loader(Faulty(sleep=30.0), workers=1, worker_timeout=1.0)
    batches = iter(loader)
    next(batches)
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match=r"within 1 s \(data.worker_timeout\) while waiting for batch 2 of "
                                                 r"2 of this epoch"):
        next(batches)
    assert time.monotonic() - start < 15
    del batches, loader


def test_the_timeout_reaches_the_loader_and_zero_means_none():
    assert _loader(Faulty(), workers=1, worker_timeout=7.5).timeout == 7.5
    assert _loader(Faulty(), workers=1).timeout == 600.0
    assert _loader(Faulty(), workers=0, worker_timeout=7.5).timeout == 0  # PyTorch allows none without workers
