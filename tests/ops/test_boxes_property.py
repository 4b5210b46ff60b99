"""Property tests of the box conversions: xyxy <-> cxcywh <-> xywh (``detector.ops.boxes``), normalised -> pixels
with clipping (``detector.data.yolo``), and letterbox -> original pixels with clipping (``detector.data.letterbox``).

Each property is checked against an independent formula written here (a box's corners from its centre and size and
back, the letterbox's forward map) over float64 boxes from a few pixels to 10^4 pixels, including zero-size boxes.
``derandomize=True``: every run draws the same examples.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detector.data.letterbox import ImageMeta, letterbox_geometry, scale_boxes_to_original
from detector.data.yolo import normalised_cxcywh_to_xyxy
from detector.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh, xyxy_to_xywh

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
coord = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
size = st.floats(0.0, 1e4, allow_nan=False, allow_infinity=False)
unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)


@st.composite
def xyxy_boxes(draw, max_n: int = 6) -> torch.Tensor:
    """Tensor[n, 4] float64 xyxy with ``x1 <= x2``, ``y1 <= y2`` (zero width or height included), n in 0..max_n."""
    n = draw(st.integers(0, max_n))
    rows = [(x, y, x + w, y + h) for x, y, w, h in draw(st.lists(st.tuples(coord, coord, size, size),
                                                                 min_size=n, max_size=n))]
    return torch.tensor(rows, dtype=torch.float64).reshape(n, 4)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float64 rounding of values of magnitude up to 2e4."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@SETTINGS
@given(boxes=xyxy_boxes())
def test_xyxy_cxcywh_round_trip_and_meaning(boxes):
    """cxcywh holds the centre ((x1 + x2) / 2) and the size (x2 - x1 >= 0); converting back gives the corners."""
    c = xyxy_to_cxcywh(boxes)
    close(c[:, 0], (boxes[:, 0] + boxes[:, 2]) / 2)
    close(c[:, 3], boxes[:, 3] - boxes[:, 1])
    assert (c[:, 2:] >= 0).all()
    close(cxcywh_to_xyxy(c), boxes)


@SETTINGS
@given(boxes=xyxy_boxes())
def test_xywh_is_top_left_and_size(boxes):
    """COCO's (x, y, w, h): the top-left corner, and x + w = x2; equal to the centre form shifted by half the size."""
    xywh = xyxy_to_xywh(boxes)
    close(xywh[:, :2], boxes[:, :2])
    close(xywh[:, :2] + xywh[:, 2:], boxes[:, 2:])
    c = xyxy_to_cxcywh(boxes)
    close(xywh, torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, 2:]], 1))


@SETTINGS
@given(cxcywh=arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 3), st.just(4)), elements=coord))
def test_conversions_keep_leading_dimensions(cxcywh):
    """Tensor[..., 4] in, Tensor[..., 4] out; the round trip holds for any values, inverted boxes included."""
    t = torch.from_numpy(cxcywh)
    out = cxcywh_to_xyxy(t)
    assert out.shape == t.shape
    close(xyxy_to_cxcywh(out), t)


@SETTINGS
@given(boxes=arrays(np.float32, st.tuples(st.integers(0, 6), st.just(4)), elements=unit),
       width=st.integers(1, 8000), height=st.integers(1, 8000))
def test_normalised_to_pixels_is_clipped_and_exact_inside(boxes, width, height):
    """Any normalised ``(cx, cy, w, h)`` in [0, 1] (what the YOLO parser yields) -> finite xyxy pixels inside the
    image with ``x1 <= x2``; equal to ``(cx -+ w / 2) * width`` (computed here in float64) clipped to the image."""
    out = normalised_cxcywh_to_xyxy(boxes, width, height)
    assert out.dtype == np.float32 and out.shape == boxes.shape and np.isfinite(out).all()
    assert (out[:, 0] <= out[:, 2]).all() and (out[:, 1] <= out[:, 3]).all()
    assert (out >= 0).all() and (out[:, [0, 2]] <= width).all() and (out[:, [1, 3]] <= height).all()
    b = boxes.astype(np.float64)
    expected = np.stack([(b[:, 0] - b[:, 2] / 2) * width, (b[:, 1] - b[:, 3] / 2) * height,
                         (b[:, 0] + b[:, 2] / 2) * width, (b[:, 1] + b[:, 3] / 2) * height], 1)
    expected = np.clip(expected, 0, [width, height, width, height])
    np.testing.assert_allclose(out, expected, rtol=0, atol=max(width, height) * 2e-7)


@SETTINGS
@given(h=st.integers(1, 4000), w=st.integers(1, 4000), side=st.integers(1, 40).map(lambda k: 32 * k),
       data=st.data())
def test_letterbox_inverse_is_clipped_and_undoes_the_forward_map(h, w, side, data):
    """Boxes inside an ``h x w`` image, mapped forward as the letterbox does (``* scale + (left, top)``), come back
    to themselves; any boxes of the network input, even far outside it, come back inside ``[0, w] x [0, h]``.
    The NumPy and torch paths agree."""
    scale, _, (left, top, _, _) = letterbox_geometry((h, w), side)
    meta = ImageMeta(image_id=0, orig_size=(h, w), scale=scale, pad=(float(left), float(top)))
    n = data.draw(st.integers(0, 5))
    fx = data.draw(arrays(np.float64, (n, 4), elements=unit))
    inside = np.stack([np.minimum(fx[:, 0], fx[:, 2]) * w, np.minimum(fx[:, 1], fx[:, 3]) * h,
                       np.maximum(fx[:, 0], fx[:, 2]) * w, np.maximum(fx[:, 1], fx[:, 3]) * h], 1)  # (n, 4)
    forward = inside * scale + np.asarray([left, top, left, top], np.float64)
    np.testing.assert_allclose(scale_boxes_to_original(forward, meta), inside, rtol=0, atol=1e-6 * max(h, w))
    anywhere = data.draw(arrays(np.float64, (n, 4), elements=coord))
    back = scale_boxes_to_original(anywhere, meta)
    assert np.isfinite(back).all() and (back >= 0).all()
    assert (back[:, [0, 2]] <= w).all() and (back[:, [1, 3]] <= h).all()
    torch.testing.assert_close(scale_boxes_to_original(torch.from_numpy(anywhere), meta), torch.from_numpy(back))
    assert math.isclose(scale, min(side / h, side / w))
