"""YOLOv5 augmentations: AugmentConfig, affine matrix and warp, box_candidates, HSV gains, flips."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from detector.data import AffineParams, AugmentConfig, box_candidates, random_affine
from detector.data.transforms import (affine_matrix, apply_flip, apply_hsv_gains, make_flip, sample_affine_params,
                                      sample_hsv_gains, warp_boxes)


def test_augment_config_defaults_are_yolov5_scratch_low():
    cfg = AugmentConfig()
    assert (cfg.hsv_h, cfg.hsv_s, cfg.hsv_v) == (0.015, 0.7, 0.4)
    assert (cfg.degrees, cfg.translate, cfg.scale, cfg.shear) == (0.0, 0.1, 0.5, 0.0)
    assert (cfg.fliplr, cfg.flipud, cfg.mosaic) == (0.5, 0.0, 1.0)


@pytest.mark.parametrize("kw", [{"fliplr": 1.5}, {"degrees": -1.0}, {"translate": 1.2}, {"mosaic": "yes"}])
def test_augment_config_rejects_bad_values_naming_the_field(kw):
    with pytest.raises(ValueError, match=f"AugmentConfig.{next(iter(kw))}"):
        AugmentConfig(**kw)


def test_rotation_matrix_matches_opencv():
    """Rotation + scale about the image centre, output centred: equals cv2.getRotationMatrix2D(centre, angle, scale)."""
    m = affine_matrix(AffineParams(angle=30.0, scale=1.3), (100, 160), (100, 160))
    np.testing.assert_allclose(m[:2], cv2.getRotationMatrix2D((80, 50), 30.0, 1.3), atol=1e-9)
    np.testing.assert_allclose(m[2], [0, 0, 1])


def test_affine_hand_computed_cases():
    """100x100 image:
    - 90 deg counter-clockwise: (x, y) -> (y, 100 - x); box (10, 20, 30, 60) -> (20, 70, 60, 90).
    - zoom 2 about the centre: x -> 2 (x - 50) + 50; box (40, 45, 60, 55) -> (30, 40, 70, 60).
    - shear_x 45 deg: x -> x + (y - 50); box (40, 40, 60, 60) corners -> x in [30, 70], y unchanged.
    - tx 0.6 on a 200-wide output: the input centre (50, 50) lands at (120, 50)."""
    size = (100, 100)
    box = np.array([[10, 20, 30, 60]], np.float32)
    np.testing.assert_allclose(warp_boxes(box, affine_matrix(AffineParams(angle=90), size, size), size),
                               [[20, 70, 60, 90]], atol=1e-4)
    np.testing.assert_allclose(warp_boxes(np.array([[40, 45, 60, 55]], np.float32),
                                          affine_matrix(AffineParams(scale=2), size, size), size),
                               [[30, 40, 70, 60]], atol=1e-4)
    np.testing.assert_allclose(warp_boxes(np.array([[40, 40, 60, 60]], np.float32),
                                          affine_matrix(AffineParams(shear_x=45), size, size), size),
                               [[30, 40, 70, 60]], atol=1e-4)
    m = affine_matrix(AffineParams(tx=0.6), size, (100, 200))
    np.testing.assert_allclose(m @ [50, 50, 1], [120, 50, 1])


def test_warp_boxes_clips_to_the_output():
    """Zoom 2 about the centre of 100x100: (0, 0, 50, 50) -> (-50, -50, 50, 50) -> clipped (0, 0, 50, 50)."""
    m = affine_matrix(AffineParams(scale=2), (100, 100), (100, 100))
    np.testing.assert_allclose(warp_boxes(np.array([[0, 0, 50, 50]], np.float32), m, (100, 100)), [[0, 0, 50, 50]])


def test_box_candidates_hand_computed():
    """Before (0, 0, 10, 10), area 100. After: same -> kept; 2 wide -> not > 2 px; 3x3 keeps 9% < 10%;
    4x4 keeps 16% -> kept. Before (0, 0, 1000, 10): after 1000 x 9.99 has ratio 100.1 >= 100 -> dropped,
    after 990 x 10 has ratio 99 -> kept."""
    before = np.array([[0, 0, 10, 10]] * 4 + [[0, 0, 1000, 10]] * 2, np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 4, 4],
                      [0, 0, 1000, 9.99], [0, 0, 990, 10]], np.float32)
    assert box_candidates(before, after).tolist() == [True, False, False, True, False, True]


def test_identity_affine_keeps_image_and_boxes():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes, labels = np.array([[5, 5, 30, 40], [50, 10, 79, 59]], np.float32), np.array([3, 7])
    out, b, lb = random_affine(image, boxes, labels, AffineParams())
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(b, boxes, atol=1e-4)
    assert lb.tolist() == [3, 7]


def test_negative_border_is_a_centre_crop():
    """Identity draw with border (-25, -25) on 100x100: the output is pixels [25:75, 25:75] and
    box (30, 30, 40, 40) -> (5, 5, 15, 15); a box outside the crop is dropped."""
    image = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    boxes = np.array([[30, 30, 40, 40], [0, 0, 10, 10]], np.float32)
    out, b, lb = random_affine(image, boxes, np.array([0, 1]), AffineParams(), border=(-25, -25))
    np.testing.assert_array_equal(out, image[25:75, 25:75])
    np.testing.assert_allclose(b, [[5, 5, 15, 15]], atol=1e-4)
    assert lb.tolist() == [0]


@pytest.mark.parametrize("seed", range(6))
def test_random_affine_box_tracks_the_drawn_rectangle(seed):
    """A white rectangle on black, warped with a random draw (rotation, shear, zoom, shift): its box after
    the warp bounds the white pixels within 1.5 px, lies inside the image, and passes box_candidates."""
    rng = np.random.default_rng(seed)
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:80, 50:110] = 255
    box = np.array([[50, 40, 110, 80]], np.float32)
    params = sample_affine_params(rng, AugmentConfig(degrees=30, shear=10, scale=0.3, translate=0.1))
    out, b, _ = random_affine(image, box, np.array([0]), params)
    ys, xs = np.nonzero(out[:, :, 0] > 127)
    assert len(b) == 1
    np.testing.assert_allclose(b[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.5)
    assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= 160).all() and (b[:, [1, 3]] <= 120).all()


def test_hsv_gains_hand_computed():
    """OpenCV HSV of RGB uint8: red (255, 0, 0) = (0, 255, 255), green (0, 255, 0) = (60, 255, 255).
    V gain 0.5: V 255 -> 127 -> red (127, 0, 0). H gain 2: 60 -> 120 = blue. S gain 0: white.
    Gains (1, 1, 1) leave the image unchanged."""
    red = np.full((2, 2, 3), (255, 0, 0), np.uint8)
    green = np.full((2, 2, 3), (0, 255, 0), np.uint8)
    assert apply_hsv_gains(red, np.array([1.0, 1.0, 0.5]))[0, 0].tolist() == [127, 0, 0]
    assert apply_hsv_gains(green, np.array([2.0, 1.0, 1.0]))[0, 0].tolist() == [0, 0, 255]
    assert apply_hsv_gains(red, np.array([1.0, 0.0, 1.0]))[0, 0].tolist() == [255, 255, 255]
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_hsv_gains(image, np.ones(3)), image)


def test_hsv_gains_are_drawn_within_the_amplitudes():
    rng = np.random.default_rng(0)
    gains = np.stack([sample_hsv_gains(rng, AugmentConfig(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4)) for _ in range(500)])
    assert (np.abs(gains - 1) <= [0.015, 0.7, 0.4]).all()
    assert (np.abs(gains - 1).max(0) > [0.014, 0.69, 0.39]).all()  # the range is actually used


def test_flips_hand_computed():
    """On a 100 wide, 50 high image: horizontal (10, 20, 30, 40) -> (100 - 30, 20, 100 - 10, 40);
    vertical -> (10, 50 - 40, 30, 50 - 20). Pixels equal numpy's flips."""
    image = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    box, label = np.array([[10, 20, 30, 40]], np.float32), np.array([4])
    out, b, lb = apply_flip(make_flip(True), image, box, label)
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_allclose(b, [[70, 20, 90, 40]], atol=1e-4)
    assert lb.tolist() == [4] and b.dtype == np.float32
    out, b, _ = apply_flip(make_flip(False), image, box, label)
    np.testing.assert_array_equal(out, image[::-1])
    np.testing.assert_allclose(b, [[10, 10, 30, 30]], atol=1e-4)
    out, b, lb = apply_flip(make_flip(True), image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert b.shape == (0, 4) and lb.shape == (0,)


def test_affine_angle_sign_matches_the_pixels():
    """+90 deg moves the top-left corner pixel region to the bottom-left (counter-clockwise on screen)."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[:10, :10] = 255
    out, _, _ = random_affine(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), AffineParams(angle=90))
    ys, xs = np.nonzero(out[:, :, 0] > 127)
    assert ys.min() >= 89 and xs.max() <= 11
    assert math.isclose(float(np.median(ys)), 95, abs_tol=1.5)
