"""Mosaic: tile placement (hand-computed), box/pixel agreement, and augmented samples on coco128."""
from __future__ import annotations

import numpy as np
import pytest

from detector.data import AffineParams, AugmentConfig, Sample, augmented_sample, mosaic
from detector.data.mosaic import mosaic_canvas, tile_regions

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def test_tile_regions_hand_computed():
    """S = 100, canvas 200, centre (120, 80), four 60x100 (h x w) tiles:
    0 top-left:     canvas (20, 20, 120, 80),  tile (0, 0, 100, 60)
    1 top-right:    canvas (120, 20, 200, 80), tile (0, 0, 80, 60)   (cut at the right edge)
    2 bottom-left:  canvas (20, 80, 120, 140), tile (0, 0, 100, 60)
    3 bottom-right: canvas (120, 80, 200, 140), tile (0, 0, 80, 60)."""
    regions = tile_regions((120, 80), [(60, 100)] * 4, 200)
    assert regions == [((20, 20, 120, 80), (0, 0, 100, 60)), ((120, 20, 200, 80), (0, 0, 80, 60)),
                       ((20, 80, 120, 140), (0, 0, 100, 60)), ((120, 80, 200, 140), (0, 0, 80, 60))]
    # a tile larger than the room left: 150x150 top-left at centre (100, 100) keeps its bottom-right 100x100
    assert tile_regions((100, 100), [(150, 150)] * 4, 200)[0] == ((0, 0, 100, 100), (50, 50, 150, 150))


def _solid_samples(sizes):
    """Four solid-colour samples whose single box covers the whole image, labelled 0..3."""
    out = []
    for i, (h, w) in enumerate(sizes):
        image = np.empty((h, w, 3), np.uint8)
        image[:] = COLOURS[i]
        out.append(Sample(image, np.array([[0, 0, w, h]], np.float32), np.array([i]), i, f"s{i}"))
    return out


def test_canvas_boxes_cover_exactly_their_tile():
    """Each box on the canvas (a whole-image box, shifted) is filled with its tile's colour, and the
    canvas outside the boxes is gray 114."""
    tiles = [(s.image, s.boxes, s.labels) for s in _solid_samples([(60, 100), (80, 50), (100, 100), (40, 70)])]
    canvas, boxes, labels = mosaic_canvas(tiles, (110, 90), 100)
    assert canvas.shape == (200, 200, 3) and labels.tolist() == [0, 1, 2, 3]
    covered = np.zeros((200, 200), bool)
    for (x1, y1, x2, y2), lbl in zip(boxes.astype(int), labels):
        assert (canvas[y1:y2, x1:x2] == COLOURS[lbl]).all()
        covered[y1:y2, x1:x2] = True
    assert (canvas[~covered] == 114).all()


@pytest.mark.parametrize("centre", [(50, 50), (150, 60), (100, 100)])
def test_mosaic_without_affine_is_the_centre_crop(centre):
    """With an identity draw the output is the canvas' [S/2, 3S/2) crop; every kept box is still filled
    with its tile's colour, inside [0, S], wider and taller than 2 px."""
    samples = _solid_samples([(100, 100), (60, 100), (100, 40), (50, 100)])  # long sides already S
    image, boxes, labels = mosaic(samples, 100, centre, AffineParams())
    canvas, _, _ = mosaic_canvas([(s.image, s.boxes, s.labels) for s in samples], centre, 100)
    np.testing.assert_array_equal(image, canvas[50:150, 50:150])
    assert ((boxes >= 0) & (boxes <= 100)).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) > 2).all()
    for (x1, y1, x2, y2), lbl in zip(np.round(boxes).astype(int), labels):
        assert (image[y1:y2, x1:x2] == COLOURS[lbl]).all()


def test_mosaic_needs_an_even_size():
    with pytest.raises(ValueError, match="even"):
        mosaic(_solid_samples([(10, 10)] * 4), 101, (50, 50), AffineParams())


@pytest.mark.parametrize("seed", range(8))
def test_augmented_samples_on_coco128_are_valid(coco128, seed):
    """Mosaic (or letterbox) + strong affine + HSV + both flips on real images: S x S uint8 image,
    boxes inside it, wider and taller than 2 px, labels valid classes."""
    ds = coco128.subset(12)
    cfg = AugmentConfig(degrees=20, shear=5, flipud=0.5, mosaic=0.7)
    s = augmented_sample(ds, seed % len(ds), 128, cfg, np.random.default_rng(seed))
    assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
    assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64 and len(s.boxes) == len(s.labels)
    assert ((s.boxes >= 0) & (s.boxes <= 128)).all()
    assert ((s.boxes[:, 2:] - s.boxes[:, :2]) > 2).all()
    assert ((s.labels >= 0) & (s.labels < 80)).all()
    assert s.orig_size == ds[seed % len(ds)].orig_size


def test_augmented_sample_is_a_function_of_the_seed(coco128):
    ds = coco128.subset(6)
    a = augmented_sample(ds, 2, 128, AugmentConfig(), np.random.default_rng(5))
    b = augmented_sample(ds, 2, 128, AugmentConfig(), np.random.default_rng(5))
    c = augmented_sample(ds, 2, 128, AugmentConfig(), np.random.default_rng(6))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.image, c.image)
