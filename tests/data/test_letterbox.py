"""Letterbox geometry (hand-computed cases), pixel content, and the inverse mapping of boxes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detector.data import ImageMeta, letterbox, letterbox_geometry, scale_boxes_to_original
from detector.data.letterbox import resize_long_side


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_landscape_into_square_hand_computed():
    """480x640 (h x w) into 320: scale = min(320/480, 320/640) = 0.5 -> 320x240 (w x h);
    vertical padding 80 = 40 top + 40 bottom. Box (100, 50, 300, 250) -> (50, 25 + 40, 150, 125 + 40)."""
    assert letterbox_geometry((480, 640), 320) == (0.5, (320, 240), (0, 40, 0, 40))
    image = _image(480, 640)
    out, boxes, scale, pad = letterbox(image, np.array([[100, 50, 300, 250]], np.float32), 320)
    assert out.shape == (320, 320, 3) and out.dtype == np.uint8
    assert scale == 0.5 and pad == (0, 40)
    np.testing.assert_allclose(boxes, [[50, 65, 150, 165]])
    assert (out[:40] == 114).all() and (out[280:] == 114).all()
    np.testing.assert_array_equal(out[40:280], cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA))


def test_odd_padding_goes_after():
    """100x300 into 64: scale = 64/300; height round(21.33) = 21; padding 43 -> top round(21.5 - 0.1) = 21,
    bottom round(21.5 + 0.1) = 22 (as YOLOv5)."""
    scale, new, (left, top, right, bottom) = letterbox_geometry((100, 300), 64)
    assert scale == pytest.approx(64 / 300) and new == (64, 21)
    assert (left, top, right, bottom) == (0, 21, 0, 22)
    out, _, _, pad = letterbox(_image(100, 300), np.zeros((0, 4), np.float32), 64)
    assert out.shape == (64, 64, 3) and pad == (0, 21)
    assert (out[:21] == 114).all() and (out[42:] == 114).all()


def test_scaleup_flag():
    """50x100 into 320. No scale-up: scale 1, padding 220 wide -> 110 each side, 270 high -> 135 each.
    Box (10, 10, 20, 20) -> (120, 145, 130, 155). Scale-up: scale min(6.4, 3.2) = 3.2 -> 320x160, top 80."""
    out, boxes, scale, pad = letterbox(_image(50, 100), np.array([[10, 10, 20, 20]], np.float32), 320, scaleup=False)
    assert scale == 1.0 and pad == (110, 135)
    np.testing.assert_allclose(boxes, [[120, 145, 130, 155]])
    assert letterbox_geometry((50, 100), 320, scaleup=True) == (3.2, (320, 160), (0, 80, 0, 80))


def test_inverse_mapping_hand_computed_and_clipped():
    """Meta of the first case (scale 0.5, pad (0, 40), original 480x640): (50, 65, 150, 165) -> (100, 50, 300, 250).
    (-10, 30, 400, 300) -> (-20, -20, 800, 520) clipped to (0, 0, 640, 480)."""
    meta = ImageMeta(image_id=1, orig_size=(480, 640), scale=0.5, pad=(0.0, 40.0))
    net = torch.tensor([[50.0, 65.0, 150.0, 165.0], [-10.0, 30.0, 400.0, 300.0]])
    expected = [[100, 50, 300, 250], [0, 0, 640, 480]]
    out = scale_boxes_to_original(net, meta)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))
    np.testing.assert_allclose(scale_boxes_to_original(net.numpy(), meta), expected)
    assert net[1, 0] == -10  # input untouched


@pytest.mark.parametrize("h, w, size", [(480, 640, 320), (427, 640, 256), (500, 375, 224), (40, 30, 128)])
def test_letterbox_then_inverse_is_identity(h, w, size):
    """Random boxes inside an h x w image survive letterbox + inverse up to float rounding."""
    rng = np.random.default_rng(h + w)
    xy = rng.uniform(0, [w, h], (20, 2))
    wh = rng.uniform(1, [w, h], (20, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    _, net, scale, pad = letterbox(_image(h, w), boxes, size)
    meta = ImageMeta(0, (h, w), scale, (float(pad[0]), float(pad[1])))
    np.testing.assert_allclose(scale_boxes_to_original(net, meta), boxes, atol=1e-3)


def test_resize_long_side_uses_ceil_and_true_ratios():
    """333x500 to 320: r = 0.64 -> ceil(320.0) = 320 wide, ceil(213.12) = 214 high; boxes scale by
    320/500 in x and 214/333 in y."""
    image, boxes = resize_long_side(_image(333, 500), np.array([[50, 33.3, 500, 333]], np.float32), 320)
    assert image.shape == (214, 320, 3)
    np.testing.assert_allclose(boxes, [[50 * 320 / 500, 33.3 * 214 / 333, 320, 214]], rtol=1e-6)
