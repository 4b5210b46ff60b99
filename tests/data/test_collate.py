"""collate: image tensor layout and scaling, flat targets [n, 6], metadata passed through."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detector.data import ImageMeta, Sample, collate


def _item(k: int, image_id: int, seed: int):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    boxes = rng.uniform(0, 16, (k, 4)).astype(np.float32)
    labels = rng.integers(0, 5, k).astype(np.int64)
    meta = ImageMeta(image_id, (32, 48), 0.5, (0.0, 4.0))
    return Sample(image, boxes, labels, image_id, f"{image_id}.jpg", (32, 48)), meta


def test_shapes_dtypes_and_values():
    """Three images with 2, 0 and 3 boxes: images [3, 3, 16, 16] float32 = pixel / 255 in CHW order;
    targets [5, 6] with image indices (0, 0, 2, 2, 2), then class and the xyxy box."""
    items = [_item(2, 10, 0), _item(0, 11, 1), _item(3, 12, 2)]
    images, targets, metas = collate(items)
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    sample = items[2][0]
    assert images[2, 1, 5, 7].item() == pytest.approx(sample.image[5, 7, 1] / 255)
    torch.testing.assert_close(images[2], torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255)
    assert targets.shape == (5, 6) and targets.dtype == torch.float32
    assert targets[:, 0].tolist() == [0, 0, 2, 2, 2]
    assert targets[2:, 1].tolist() == sample.labels.astype(float).tolist()
    torch.testing.assert_close(targets[2:, 2:], torch.from_numpy(sample.boxes))
    assert [m.image_id for m in metas] == [10, 11, 12]


def test_batch_without_boxes_and_non_contiguous_images():
    """No boxes at all -> targets [0, 6]; a flipped (negative-stride) image is accepted."""
    s, m = _item(0, 1, 3)
    flipped = Sample(s.image[:, ::-1], s.boxes, s.labels, 1, "x", s.orig_size)
    batch = collate([(flipped, m)])
    assert batch.targets.shape == (0, 6)
    torch.testing.assert_close(batch.images[0, 0], torch.from_numpy(s.image[:, ::-1, 0].copy()).float() / 255)
    assert not math.isnan(batch.metas[0].scale)
