"""data.augment_backend: torch. Workers plan each sample (detector/data/plan.py) and the pixels are drawn per batch
(detector/data/render.py). The plan draws what the numpy path draws: same boxes and labels, exactly; the drawn
pixels equal the numpy path's up to interpolation (checked on smoothed images, where one bilinear read and the
numpy path's resize-then-warp agree), and the HSV conversion is checked against OpenCV's."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from detector.data import AugmentConfig
from detector.data.pipeline import DetectionInputs
from detector.data.plan import flip_boxes
from detector.data.render import ImageBank, RenderLoader, collate_plans, hsv_gains, render

CONFIGS = {
    "mosaic": AugmentConfig(flipud=0.5),
    "letterbox": AugmentConfig(mosaic=0.0, degrees=10, shear=3, flipud=0.5),
}


@pytest.fixture(scope="module")
def smooth(coco128):
    """12 coco128 images blurred (sigma 4), cached: interpolation differences vanish, geometry errors would not."""
    ds = copy.copy(coco128.subset(12))
    ds.cache_images()
    ds._images = [cv2.GaussianBlur(im, (0, 0), 4.0) for im in ds._images]
    return ds


@pytest.mark.parametrize("name", CONFIGS)
def test_plans_give_the_numpy_paths_boxes_and_close_pixels(smooth, name):
    cfg = CONFIGS[name]
    numpy_path, plans = DetectionInputs(smooth, 256, cfg), DetectionInputs(smooth, 256, cfg, plans=True)
    keys = [(i, 1000 + i) for i in range(len(smooth))]
    items = [plans[k] for k in keys]
    geometry, targets, _ = collate_plans(items)
    images = render(ImageBank(smooth), geometry, 256)
    assert images.shape == (12, 3, 256, 256) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert bool(geometry["flips"][:, 0].any())  # the flips are exercised
    for i, key in enumerate(keys):
        sample, _ = numpy_path[key]
        plan, _ = items[i]
        np.testing.assert_array_equal(plan.boxes, sample.boxes)
        np.testing.assert_array_equal(plan.labels, sample.labels)
        rows = targets[targets[:, 0] == i]
        np.testing.assert_array_equal(rows[:, 2:].numpy(), sample.boxes)
        reference = torch.from_numpy(sample.image).permute(2, 0, 1).float()
        assert float((images[i] * 255 - reference).abs().mean()) < 2.0, i  # gray levels; measured 0.4-1.5


def test_hsv_gains_match_opencv():
    """Random colours through both: OpenCV's uint8 HSV with lookup tables vs the float version, within the uint8
    rounding of the former (a few levels)."""
    from detector.data.transforms import apply_hsv_gains

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for gains in ([1.0, 1.0, 1.0], [1.01, 0.5, 1.3], [0.99, 1.6, 0.7]):
        expected = apply_hsv_gains(image, np.asarray(gains)).astype(np.float32)
        got = hsv_gains(torch.from_numpy(image).permute(2, 0, 1)[None].float(), torch.tensor([gains]))[0]
        diff = (got.permute(1, 2, 0).numpy() - expected).__abs__()
        assert diff.mean() < 2.0 and np.median(diff) <= 1.5, gains


def test_flip_boxes_by_hand():
    boxes = np.asarray([[10, 20, 30, 60]], dtype=np.float32)
    np.testing.assert_array_equal(flip_boxes(boxes, 100, horizontal=True), [[70, 20, 90, 60]])
    np.testing.assert_array_equal(flip_boxes(boxes, 100, horizontal=False), [[10, 40, 30, 80]])


def test_training_loader_with_the_torch_backend(coco128):
    """build_loader with data.augment_backend=torch: batches of images drawn by RenderLoader, the same targets as
    the numpy backend's loader for the same seed (workers or not), and reseeding still drives the epochs."""
    from detector import build
    from detector.config import load_config

    ds = coco128.subset(8)
    batches = {}
    for backend, workers in (("numpy", 0), ("torch", 0), ("torch", 2)):
        cfg = load_config("yolov5_ciou", ["data.img_size=128", f"data.workers={workers}", "train.batch_size=4",
                                          f"data.augment_backend={backend}"])
        loader = build.build_loader(cfg, ds, train=True)
        assert isinstance(loader, RenderLoader) == (backend == "torch")
        loader.sampler.reseed(5)
        batches[backend, workers] = next(iter(loader))
    for key in (("torch", 0), ("torch", 2)):
        assert batches[key].images.shape == (4, 3, 128, 128)
        assert torch.equal(batches[key].targets, batches["numpy", 0].targets)
    assert torch.equal(batches["torch", 0].images, batches["torch", 2].images)
