"""Fixtures shared by every test folder: real coco128 boxes, letterboxed, as collated target batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.data.coco import letterboxed_coco_targets

COCO128_JSON = Path(__file__).resolve().parents[1] / "data" / "coco128" / "annotations" / "instances_train2017.json"


@pytest.fixture(scope="session")
def coco128_targets():
    """``coco128_targets(num_images, img_size) -> Tensor[n, 6]``: the first images of the shipped coco128."""
    return lambda num_images=16, img_size=640: letterboxed_coco_targets(COCO128_JSON, num_images, img_size)


@pytest.fixture(scope="session")
def coco128_batch(coco128_targets):
    """(targets Tensor[n, 6], batch_size 16, img_size 640) from real coco128 annotations."""
    return coco128_targets(16, 640), 16, 640


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """A test that sets torch's thread count (the benchmarks' smoke forms run in-process with --threads 1) must not
    change it for the tests after it: training trajectories, and so the memorisation tests, depend on it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
