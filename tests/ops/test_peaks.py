"""Tests of detector/ops/peaks.py (CenterNet's 3 x 3 max-pool peak extraction).

Hand-made map, B = 1, C = 2, H = 4, W = 5 (``(y, x)`` cells):

class 0::

    0.1 0.9 0.2 0.0 0.3
    0.1 0.2 0.1 0.0 0.8
    0.0 0.1 0.0 0.0 0.1
    0.5 0.0 0.0 0.0 0.0

  peaks: 0.9 at (0, 1); 0.8 at (1, 4) on the right border; 0.5 at the corner (3, 0). 0.3 at (0, 4) touches 0.8,
  0.2 at (0, 2) and (1, 1) touch 0.9; every other cell touches a larger one (checked cell by cell): 3 peaks.

class 1::

    .05 .05 .05 .05 .05
    .05 0.6 0.6 .05 .05
    .05 0.6 0.6 .05 .05
    .05 .05 .05 .05 0.7

  the 2 x 2 plateau of 0.6: each cell equals its neighbourhood's maximum, so all four are kept (CenterNet keeps
  plateaus); 0.7 at the corner (3, 4); among the 0.05s only (0, 4) and (1, 4) touch neither 0.6 nor 0.7.

Sorted: 0.9, 0.8, 0.7, 0.6 x 4, 0.5, 0.05 x 2, then zeros (suppressed cells).
"""
from __future__ import annotations

import pytest
import torch

from detector.ops.peaks import heatmap_peaks

CLASS0 = [[0.1, 0.9, 0.2, 0.0, 0.3], [0.1, 0.2, 0.1, 0.0, 0.8], [0.0, 0.1, 0.0, 0.0, 0.1], [0.5, 0.0, 0.0, 0.0, 0.0]]
CLASS1 = [[0.05] * 5, [0.05, 0.6, 0.6, 0.05, 0.05], [0.05, 0.6, 0.6, 0.05, 0.05], [0.05, 0.05, 0.05, 0.05, 0.7]]


def hand_map():
    return torch.tensor([[CLASS0, CLASS1]])  # (1, 2, 4, 5)


def as_set(score, cls, y, x):
    return sorted(zip([round(v, 6) for v in score.tolist()], cls.tolist(), y.tolist(), x.tolist()))


def test_hand_map():
    score, cls, y, x = heatmap_peaks(hand_map(), k=10)
    assert score.shape == cls.shape == y.shape == x.shape == (1, 10)
    assert cls.dtype == y.dtype == x.dtype == torch.long and score.dtype == torch.float32
    assert score[0].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.6, 0.5, 0.05, 0.05])
    want = [(0.05, 1, 0, 4), (0.05, 1, 1, 4), (0.5, 0, 3, 0), (0.6, 1, 1, 1), (0.6, 1, 1, 2), (0.6, 1, 2, 1),
            (0.6, 1, 2, 2), (0.7, 1, 3, 4), (0.8, 0, 1, 4), (0.9, 0, 0, 1)]
    assert as_set(score[0], cls[0], y[0], x[0]) == want
    # the first three are in a fixed order (no ties)
    assert (cls[0, :3].tolist(), y[0, :3].tolist(), x[0, :3].tolist()) == ([0, 0, 1], [0, 1, 3], [1, 4, 4])


def test_k_larger_than_the_map_and_kernel_one():
    """k = 100 > C * H * W = 40: all 40 values come back, the 10 peaks then 30 zeros. kernel = 1 keeps every
    cell: a plain top-k of the flattened map."""
    score, cls, y, x = heatmap_peaks(hand_map(), k=100)
    assert score.shape == (1, 40) and int((score > 0).sum()) == 10
    scores = hand_map()
    s1, c1, y1, x1 = heatmap_peaks(scores, k=7, kernel=1)
    top, index = scores.reshape(1, -1).topk(7)
    assert torch.equal(s1, top) and torch.equal(c1 * 20 + y1 * 5 + x1, index)


def _peaks_by_loop(scores, kernel):
    """Every cell compared with each neighbour inside the map, one at a time."""
    b, c, h, w = scores.shape
    half = kernel // 2
    out = []
    for i in range(b):
        found = []
        for k in range(c):
            for yy in range(h):
                for xx in range(w):
                    v = float(scores[i, k, yy, xx])
                    neighbours = [float(scores[i, k, a, bb]) for a in range(max(0, yy - half), min(h, yy + half + 1))
                                  for bb in range(max(0, xx - half), min(w, xx + half + 1))]
                    if v >= max(neighbours):
                        found.append((round(v, 6), k, yy, xx))
        out.append(sorted(found)[::-1])
    return out


@pytest.mark.parametrize("kernel", [3, 5])
def test_random_maps_match_a_loop(kernel):
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 3, 6, 7, generator=g)  # distinct values: no ties
    want = _peaks_by_loop(scores, kernel)
    k = min(len(w) for w in want)
    score, cls, y, x = heatmap_peaks(scores, k=k, kernel=kernel)
    for i in range(2):
        got = list(zip([round(v, 6) for v in score[i].tolist()], cls[i].tolist(), y[i].tolist(), x[i].tolist()))
        assert got == want[i][:k]
    assert k >= 5  # a real comparison: several peaks per image


def test_bad_arguments():
    with pytest.raises(ValueError, match="Tensor\\[B, C, H, W\\]"):
        heatmap_peaks(torch.zeros(2, 4, 4))
    for kernel in (2, 0, 3.0, True):
        with pytest.raises(ValueError, match="kernel"):
            heatmap_peaks(hand_map(), kernel=kernel)
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must"):
            heatmap_peaks(hand_map(), k=k)


def test_peak_detections_keeps_local_maxima_with_their_boxes():
    """A 1-image, 2 x 3 map, one class: scores [[0.9, 0.5, 0.1], [0.2, 0.3, 0.6]]. 3x3 neighbourhoods cover the whole
    map from the middle column, so only 0.9 (cell 0) is a local maximum; 0.6 (cell 5) is next to 0.5 and 0.3 but its
    window holds only columns 1-2, where 0.6 is the largest: a peak too. Each keeps its own prior's box."""
    from detector.ops.peaks import peak_detections

    scores = torch.tensor([0.9, 0.5, 0.1, 0.2, 0.3, 0.6]).view(1, 6, 1)
    boxes = torch.arange(24, dtype=torch.float32).view(1, 6, 4)
    rows = peak_detections(boxes, scores, (1, 2, 3), conf_thres=0.05, max_det=10)[0]
    assert rows[:, 4].tolist() == pytest.approx([0.9, 0.6])
    assert rows[:, :4].tolist() == [boxes[0, 0].tolist(), boxes[0, 5].tolist()]
    assert rows[:, 5].tolist() == [0.0, 0.0]
    only_top = peak_detections(boxes, scores, (1, 2, 3), conf_thres=0.7)[0]
    assert only_top[:, 4].tolist() == pytest.approx([0.9])
    with pytest.raises(ValueError, match="one level"):
        peak_detections(boxes, scores, (2, 1, 3))
