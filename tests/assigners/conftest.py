"""Shared fixtures of the assigner tests: real coco128 boxes, letterboxed, as a collated target batch."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

COCO128_JSON = Path(__file__).resolve().parents[2] / "data" / "coco128" / "annotations" / "instances_train2017.json"


def coco128_targets(batch_size: int = 16, img_size: int = 640, skip_crowd: bool = True) -> torch.Tensor:
    """Targets Tensor[n, 6] = (image_index, class, x1, y1, x2, y2) of the first ``batch_size`` coco128 images
    (by image id), each letterboxed into an ``img_size`` square (scaled by ``img_size / max(h, w)``, centred).

    Classes are the contiguous index of the category in id order (COCO's 0..79). Images without boxes keep their
    index (they have no rows), so a batch can hold empty images.
    """
    data = json.loads(COCO128_JSON.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:batch_size]
    index = {im["id"]: i for i, im in enumerate(images)}
    cats = {c["id"]: k for k, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    rows = []
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        if ann["image_id"] not in index or (skip_crowd and ann.get("iscrowd", 0)):
            continue
        im = images[index[ann["image_id"]]]
        scale = img_size / max(im["width"], im["height"])
        pad_x, pad_y = (img_size - im["width"] * scale) / 2, (img_size - im["height"] * scale) / 2
        x, y, w, h = ann["bbox"]
        rows.append([index[ann["image_id"]], cats[ann["category_id"]], x * scale + pad_x, y * scale + pad_y,
                     (x + w) * scale + pad_x, (y + h) * scale + pad_y])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


@pytest.fixture(scope="session")
def coco128_batch():
    """(targets Tensor[n, 6], batch_size 16, img_size 640) from real coco128 annotations."""
    return coco128_targets(16, 640), 16, 640
