"""YOLOv1's label assignment (Redmon et al. 2016): the centre cell's predictor with the best current box.

One grid (the priors' single level, or the coarsest when there are several), ``A`` predictors per cell (YOLOv1's
``B = 2``): a ground truth is assigned to the cell holding its centre, and within that cell to the one predictor
whose *current* predicted box has the highest IoU with it ("responsible" for it in the paper), so the predictors
specialise in shapes as training goes. Every other prior is negative (YOLOv1 weights their confidence loss by
``lambda_noobj = 0.5``: ``loss.obj: {name: mse, neg_weight: 0.5}``). Shape letters as in
:mod:`detector.structures`; here ``n`` ground-truth rows and ``A`` predictors per cell.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.common import check_targets
from detector.ops.boxes import aligned_iou
from detector.structures import Assignment, Predictions, Priors


def assign_yolov1(priors: Priors, targets: Tensor, batch_size: int, pred_boxes: Tensor) -> Assignment:
    """Each ground truth to the predictor of its centre cell whose predicted box overlaps it most.

    Worked example: one level of stride 32 with ``(A, H, W) = (2, 2, 2)``, a target ``(0, cls, 8, 8, 40, 40)``:
    centre ``(24, 24)``, cell ``(0, 0)``, its predictors are priors ``(0 * 2 + 0) * 2 + 0 = 0`` and
    ``(1 * 2 + 0) * 2 + 0 = 4``. Predicted boxes ``(0, 0, 16, 16)`` (IoU 64 / 1216 = 0.053) and
    ``(8, 8, 40, 32)`` (IoU 768 / 1024 = 0.75): prior 4 is responsible. Ties go to the first predictor.

    Args:
        priors (Priors): the grid; with several levels, the coarsest is used.
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` pixels.
        batch_size (int): B.
        pred_boxes (Tensor[B, P, 4]): decoded xyxy boxes of every prior, detached.

    Returns:
        Assignment with one pair per ground truth, in row order; ``ignore`` None (every other prior negative).
    """
    check_targets(targets, batch_size, "assign_yolov1")
    if pred_boxes.shape[:2] != (batch_size, len(priors)) or pred_boxes.shape[-1] != 4:
        raise ValueError(f"assign_yolov1: pred_boxes must be Tensor[B={batch_size}, P={len(priors)}, 4], "
                         f"got {tuple(pred_boxes.shape)}")
    if targets.shape[0] == 0:
        return Assignment.empty(targets.device)
    level = priors.num_levels - 1
    num_anchors, height, width = priors.level_shapes[level]
    start = priors.level_offsets[level]
    stride = float(priors.strides[start])
    image = targets[:, 0].long()  # (n,)
    centre = (targets[:, 2:4] + targets[:, 4:6]) / 2 / stride  # (n, 2) grid units
    cell_x = centre[:, 0].long().clamp(0, width - 1)
    cell_y = centre[:, 1].long().clamp(0, height - 1)
    anchor = torch.arange(num_anchors, device=targets.device)  # (A,)
    candidates = start + (anchor[None, :] * height + cell_y[:, None]) * width + cell_x[:, None]  # (n, A)
    boxes = pred_boxes[image[:, None], candidates]  # (n, A, 4)
    iou = aligned_iou(boxes, targets[:, None, 2:6].expand_as(boxes))  # (n, A)
    best = iou.argmax(dim=1)  # (n,): the first of equal maxima
    prior_index = candidates.gather(1, best[:, None])[:, 0]  # (n,)
    rows = torch.arange(targets.shape[0], device=targets.device)
    return Assignment(batch_index=image, prior_index=prior_index, gt_index=rows)


class YOLOv1Assigner:
    """Callable wrapper of :func:`assign_yolov1`; reads ``pred.boxes`` (decoded, detached)."""

    needs_predictions = True
    needs_anchors = False

    def __call__(self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None) -> Assignment:
        if pred is None:
            raise ValueError("YOLOv1Assigner needs predictions: the responsible predictor is the one whose current "
                             "box overlaps the ground truth most")
        return assign_yolov1(priors, targets, batch_size, pred.boxes)

    def __repr__(self) -> str:
        return "YOLOv1Assigner()"
