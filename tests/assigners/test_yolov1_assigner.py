"""Tests of detector/assigners/yolov1.py: the centre cell's predictor whose current box overlaps the gt most.

Grid: one level of stride 32, ``(A, H, W) = (2, 2, 2)`` (a 64 px input, 2 predictors per cell): the flat index of
predictor ``a`` at cell ``(x, y)`` is ``(a * 2 + y) * 2 + x``.
"""
from __future__ import annotations

import pytest
import torch

from detector.assigners.yolov1 import YOLOv1Assigner, assign_yolov1
from detector.models.priors import AnchorPriorGenerator
from detector.structures import Predictions

PRIORS = AnchorPriorGenerator([[96, 96, 96, 96]], [32])([(2, 2)])


def boxes_at(*placed):
    """pred_boxes Tensor[1, 8, 4], every prior (0, 0, 1, 1) except the ``(prior, box)`` given."""
    pred = torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(1, 8, 1)
    for prior, box in placed:
        pred[0, prior] = torch.tensor(box, dtype=torch.float32)
    return pred


def test_docstring_worked_example():
    """Cell (0, 0) holds priors 0 and 4; IoUs with (8, 8, 40, 40): 64/1216 and 768/1024: prior 4 is responsible."""
    targets = torch.tensor([[0, 3, 8.0, 8.0, 40.0, 40.0]])
    a = assign_yolov1(PRIORS, targets, 1, boxes_at((0, (0, 0, 16, 16)), (4, (8, 8, 40, 32))))
    assert (a.batch_index.tolist(), a.prior_index.tolist(), a.gt_index.tolist()) == ([0], [4], [0])
    assert a.ignore is None and a.negative is None


def test_the_choice_follows_the_current_predictions():
    """The same gt goes to prior 0 when prior 0's box is the better one; equal boxes: the first predictor."""
    targets = torch.tensor([[0, 0, 8.0, 8.0, 40.0, 40.0]])
    better_first = boxes_at((0, (8, 8, 40, 40)), (4, (8, 8, 40, 32)))
    assert assign_yolov1(PRIORS, targets, 1, better_first).prior_index.tolist() == [0]
    assert assign_yolov1(PRIORS, targets, 1, boxes_at()).prior_index.tolist() == [0]


def test_cells_borders_and_two_gts_in_one_cell():
    """Centre (48, 16) is in cell (1, 0): priors 1 and 5. A centre on the border x = 32 belongs to cell 1; a centre
    at the image edge (64) is clamped into the last cell. Two gts in cell (1, 1) may take the same predictor (each
    keeps its pair, as YOLOv1's loss would count both)."""
    targets = torch.tensor([
        [0, 0, 40.0, 8.0, 56.0, 24.0],    # centre (48, 16): cell (1, 0)
        [0, 0, 24.0, 40.0, 40.0, 56.0],   # centre (32, 48): border, cell (1, 1)
        [0, 0, 56.0, 56.0, 72.0, 72.0],   # centre (64, 64): clamped to cell (1, 1)
    ])
    a = assign_yolov1(PRIORS, targets, 1, boxes_at((5, (40, 8, 56, 24))))
    assert a.prior_index.tolist() == [5, 3, 3] and a.gt_index.tolist() == [0, 1, 2]


def test_batch_and_empty_cases():
    targets = torch.tensor([[1, 0, 8.0, 8.0, 40.0, 40.0]])
    pred = torch.cat((boxes_at(), boxes_at((4, (8, 8, 40, 40)))))
    a = assign_yolov1(PRIORS, targets, 2, pred)
    assert (a.batch_index.tolist(), a.prior_index.tolist()) == ([1], [4])
    assert assign_yolov1(PRIORS, torch.zeros(0, 6), 2, pred).num_pos == 0


def test_class_needs_predictions_and_checks_shapes():
    assigner = YOLOv1Assigner()
    assert assigner.needs_predictions and not assigner.needs_anchors and repr(assigner) == "YOLOv1Assigner()"
    targets = torch.tensor([[0, 3, 8.0, 8.0, 40.0, 40.0]])
    pred = boxes_at((4, (8, 8, 40, 32)))
    assert assigner(PRIORS, targets, 1, Predictions(pred, torch.zeros(1, 8, 4))).prior_index.tolist() == [4]
    with pytest.raises(ValueError, match="needs predictions"):
        assigner(PRIORS, targets, 1)
    with pytest.raises(ValueError, match="pred_boxes must be Tensor"):
        assign_yolov1(PRIORS, targets, 1, pred[:, :4])
