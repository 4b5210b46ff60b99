"""Shared fixtures for the data tests: the shipped coco128 and ../shared's BCCD (real data)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
COCO128 = REPO / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017.json"
COCO128_IMAGES = COCO128 / "images" / "train2017"
BCCD = (REPO / "data" / "../../shared/data/bccd").resolve()  # where data/bccd.yaml points


@pytest.fixture(scope="session")
def coco128_json() -> dict:
    """The raw annotation file, read with plain json (independent of the dataset code)."""
    with open(COCO128_JSON) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def coco128():
    from detector.data import CocoDataset
    return CocoDataset(str(COCO128_JSON), str(COCO128_IMAGES))


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"BCCD not found at {BCCD} (../shared beside the repository)")
    return BCCD


def _write_image(path: Path, height: int, width: int, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


@pytest.fixture
def write_image():
    """``write_image(path, height, width, value=0)``: write a constant-valued image file (folders created)."""
    return _write_image
