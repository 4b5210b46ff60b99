"""Tests of detector/ops/center_coder.py (CenterNet's offset + size coder).

Hand case: one level of stride 4, 10 x 10 cells (prior ``gy * 10 + gx``, centre ``4 g + 2``). The prior at cell
``(3, 5)`` is index 53, centre ``(14, 22)``. Raw ``(0.5, 0.25, 6, 2)``: centre ``((3 + 0.5) * 4, (5 + 0.25) * 4)
= (14, 21)``, size ``(6 * 4, 2 * 4) = (24, 8)``: xyxy ``(2, 17, 26, 25)``. The box ``(10, 20, 22, 24)`` (centre
``(16, 22)``, size ``12 x 4``) at that prior: offset ``(16 / 4 - 3, 22 / 4 - 5) = (1, 0.5)`` and size
``(3, 1)``; at prior 54 (cell (4, 5)) the offset is ``(0, 0.5)``.
"""
from __future__ import annotations

import pytest
import torch

from detector.assigners.centernet import assign_centernet
from detector.models.priors import PointPriorGenerator
from detector.ops.center_coder import CenterNetCoder


def level(h=10, w=10, stride=4):
    return PointPriorGenerator([stride])([(h, w)])


def test_attributes():
    coder = CenterNetCoder()
    assert coder.num_outputs == 4 and coder.needs_anchors is False and repr(coder) == "CenterNetCoder()"


def test_hand_case():
    coder, priors = CenterNetCoder(), level()
    index = torch.tensor([53])
    assert coder.decode_at(torch.tensor([[0.5, 0.25, 6.0, 2.0]]), priors, index).tolist() == [[2.0, 17.0, 26.0, 25.0]]
    box = torch.tensor([[10.0, 20.0, 22.0, 24.0]])
    assert coder.encode_at(box, priors, index).tolist() == [[1.0, 0.5, 3.0, 1.0]]
    assert coder.encode_at(box, priors, torch.tensor([54])).tolist() == [[0.0, 0.5, 3.0, 1.0]]
    # every prior: raw 0 offset, size 1 -> the box of one cell whose top-left corner is the cell's corner
    full = coder.decode(torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(2, 100, 4), priors)  # (B, P, 4)
    grid = priors.grid * 4
    assert full.shape == (2, 100, 4)
    assert torch.equal(full[1], torch.cat((grid - 2, grid + 2), dim=1))


def test_round_trips_and_gathered_paths():
    """decode(encode(box)) == box for any prior; encode(decode(raw)) == raw; the _at paths equal the full ones."""
    g = torch.Generator().manual_seed(0)
    coder, priors = CenterNetCoder(), PointPriorGenerator([8])([(6, 7)])
    xy = torch.rand(3, 42, 2, generator=g, dtype=torch.float64) * 50
    wh = torch.rand(3, 42, 2, generator=g, dtype=torch.float64) * 30 + 0.5
    boxes = torch.cat((xy, xy + wh), dim=-1)  # (3, 42, 4)
    priors64 = PointPriorGenerator([8])([(6, 7)], dtype=torch.float64)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, priors64), priors64), boxes, rtol=0, atol=1e-12)
    raw = torch.randn(3, 42, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(coder.encode(coder.decode(raw, priors64), priors64), raw, rtol=0, atol=1e-12)
    index = torch.tensor([0, 41, 17, 17])
    raw32 = raw[1, index].float()
    torch.testing.assert_close(coder.decode_at(raw32, priors, index), coder.decode(raw.float(), priors)[1, index])
    torch.testing.assert_close(coder.encode_at(boxes[2, index].float(), priors, index),
                               coder.encode(boxes.float(), priors)[2, index])


def test_assigned_boxes_have_in_cell_offsets():
    """With the CenterNet assigner's pairs, the offset target lies in [0, 1) and the size is the box in cells."""
    targets = torch.tensor([[0, 0, 1.0, 3.0, 17.0, 30.0], [1, 2, 20.0, 8.0, 39.0, 39.0],
                            [1, 1, 0.0, 0.0, 40.0, 40.0]])
    priors = level()
    result = assign_centernet(priors, targets, batch_size=2, num_classes=3)
    raw = CenterNetCoder().encode_at(targets[result.gt_index, 2:], priors, result.prior_index)
    assert result.num_pos == 3 and bool(((raw[:, :2] >= 0) & (raw[:, :2] < 1)).all())
    sizes = (targets[result.gt_index, 4:] - targets[result.gt_index, 2:4]) / 4
    torch.testing.assert_close(raw[:, 2:], sizes)
    back = CenterNetCoder().decode_at(raw, priors, result.prior_index)
    torch.testing.assert_close(back, targets[result.gt_index, 2:])


def test_shape_errors():
    coder, priors = CenterNetCoder(), level()
    with pytest.raises(ValueError, match="num_outputs = 4"):
        coder.decode(torch.zeros(1, 100, 5), priors)
    with pytest.raises(ValueError, match="N = 100"):
        coder.encode(torch.zeros(1, 99, 4), priors)
    with pytest.raises(ValueError, match="prior_index"):
        coder.decode_at(torch.zeros(2, 4), priors, torch.tensor([0.0, 1.0]))
