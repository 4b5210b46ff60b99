"""YOLOv3's (and YOLOv2's) label assignment: one best-shaped anchor per ground truth, plus the ignore rule.

The rule (Redmon & Farhadi 2018, and Darknet's ``yolo_layer.c`` / ``region_layer.c``):

* **positives**: every ground truth goes to exactly one prior: the anchor, among *all* anchors of *all*
  levels, whose shape best matches the box (IoU of the two boxes centred on one point), in the cell that
  holds the box centre at that anchor's level. The other levels get nothing from that box.
* **ignored**: a prior that is not positive but whose *predicted* box overlaps some ground truth of its
  image with IoU ``> ignore_thresh`` is left out of the objectness loss (neither positive nor negative).
* **negatives**: everything else.

Shape letters as in :mod:`detector.structures`; here also ``T`` = anchors over all levels (``sum A_l``).

Which rule each ported codebase uses (the reason this file follows Darknet):

* Darknet YOLOv3: best anchor over all levels (``l.total``), first anchor on a tie (strict ``>``); the ignore
  test compares every prior's predicted box with every truth of its image (``best_iou > ignore_thresh``),
  and a positive overwrites it.
* eriklindernoren/PyTorch-YOLOv3 (``build_targets``): best anchor of *each level separately* (so every box
  has a positive on every level), and its ignore mask (``noobj_mask``) uses the *anchor-shape* IoU in the
  box's own cell rather than the predicted box. Neither is the paper's rule; not done here.

Facts for the criterion author (objectness normalisation and targets live in the criterion, not here):

* Darknet YOLOv3: the gradient on an objectness logit is ``target - sigmoid(logit)`` (BCE with logits),
  summed over every non-ignored prior of the batch, and the weight update divides by the batch size: the
  objectness term is normalised **by the batch size**.
* eriklindernoren/PyTorch-YOLOv3: ``obj_scale * mean BCE over positives + noobj_scale * mean BCE over
  negatives`` with ``obj_scale = 1``, ``noobj_scale = 100``: the positive term normalised **by the number of
  positives**, the negative term by the number of negatives.
* Darknet YOLOv2 (``region_layer.c``, ``yolo-voc.cfg``): ``object_scale = 5``, ``noobject_scale = 1``,
  ``rescore = 1`` (the positive objectness target is the IoU of the predicted box with its ground truth,
  not 1), ``thresh = .6`` (the ignore threshold); for the first 12800 images seen every prior also regresses
  weakly (scale 0.01) towards its own anchor at its cell centre.

Either normalisation is an ``avg_factor`` the criterion picks (``Assignment.num_pos`` or ``B``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.common import check_targets
from detector.assigners.yolov5 import _level_anchors
from detector.ops.boxes import box_iou
from detector.structures import Assignment, Predictions, Priors


def _check_ignore_thresh(ignore_thresh: float, where: str) -> None:
    if not 0.0 <= ignore_thresh <= 1.0:
        raise ValueError(
            f"{where}: ignore_thresh must be in [0, 1] (YOLOv3 uses 0.5, YOLOv2 0.6; 1.0 ignores nothing), "
            f"got {ignore_thresh}"
        )


def _origin_boxes(wh: Tensor) -> Tensor:
    """wh (Tensor[N, 2]) -> Tensor[N, 4] xyxy boxes of that size centred on the origin."""
    half = wh / 2
    return torch.cat((-half, half), dim=-1)


def yolov3_ignore_mask(pred_boxes: Tensor, targets: Tensor, batch_size: int, ignore_thresh: float) -> Tensor:
    """Priors whose predicted box overlaps a ground truth of their image with IoU ``> ignore_thresh``.

    Args:
        pred_boxes (Tensor[B, P, 4]): detached decoded xyxy boxes in pixels.
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)``.
        batch_size (int): B.
        ignore_thresh (float): strict threshold (Darknet's ``best_iou > ignore_thresh``).

    Returns:
        Tensor[B, P] bool, True where ``max_g IoU(pred[b, p], gt[b, g]) > ignore_thresh`` over the real boxes
        of image ``b``. Positives are *not* removed here; see :func:`assign_yolov3`.
        Cost: one ``(n, P)`` IoU tensor, each box against the predictions of its own image only. (Padding every
        image to the most boxes of the batch costs ``(B, P, G_max)``: on coco128 at batch 64 that is about 7x as
        many IoUs, and was 1.5 s of the YOLOv3 preset's 1.6 s assignment + loss at 640 px.)
    """
    num_priors = pred_boxes.shape[1]
    image = targets[:, 0].long()  # (n,)
    gt = targets[:, None, 2:6].float()  # (n, 1, 4)
    iou = torch.vmap(box_iou)(gt, pred_boxes.float()[image])[:, 0]  # (n, P)
    rows = image[:, None].expand(-1, num_priors)  # (n, P) the image of each row
    best = iou.new_zeros(batch_size, num_priors).scatter_reduce_(0, rows, iou, "amax")  # (B, P) max over own boxes
    return best > ignore_thresh  # (B, P)


def assign_yolov3(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    pred_boxes: Tensor | None = None,
    ignore_thresh: float = 0.5,
) -> Assignment:
    """Assign each ground truth to the best-shaped anchor over all levels, in its centre cell; ignore good guesses.

    **Positive.** For a box of size ``(w, h)`` and an anchor ``(aw, ah)`` the shape IoU is the IoU of the two
    boxes centred together: ``inter = min(w, aw) * min(h, ah)``, ``iou = inter / (w * h + aw * ah - inter)``
    (computed with :func:`detector.ops.boxes.box_iou` on origin-centred boxes). The best of all ``T`` anchors
    (levels concatenated finest first, anchors in order; on a tie the first, like Darknet's strict ``>``)
    picks the level ``l`` and the anchor ``a``; the cell is ``(int(cx / s_l), int(cy / s_l))`` clamped into
    the ``W_l x H_l`` grid (a centre on the right or bottom border goes to the last cell), so the prior is
    ``level_offsets[l] + (a * H_l + gy) * W_l + gx``. One pair per ground truth. A box with zero width or
    height has shape IoU 0 with every anchor and gets no pair (Darknet stops reading truths at such a box;
    YOLOv5's ratio test rejects it).

    **Two ground truths on one prior.** When two boxes of one image pick the same prior, *both pairs are
    kept*. Darknet writes its targets into a dense array, so the box written last (the later label row)
    silently replaces the earlier one. Here the :class:`Assignment` is a list of pairs, so nothing needs to be
    dropped: keeping both does not depend on the order of the label file, does not lose a ground truth, and
    is what the YOLOv5 assigner does; the criterion sees two pairs on one prior (objectness target 1 either
    way; the box and class terms get one entry per ground truth).

    **Ignored.** With ``pred_boxes`` given, a prior that is in no pair and whose predicted box has IoU
    ``> ignore_thresh`` (strict) with any ground truth of its own image is ignored (:func:`yolov3_ignore_mask`).
    A positive prior is never ignored. With ``pred_boxes`` None there is no ignore rule: ``ignore`` is None
    and every prior outside the pairs is negative (the criterion must then not expect a mask).

    Worked example: strides 8 / 16 / 32 with YOLOv5's anchors ``(10,13) (16,30) (33,23) / (30,61) (62,45)
    (59,119) / (116,90) (156,198) (373,326)`` on a 64 x 64 input, so ``(A, H, W)`` = ``(3, 8, 8)``,
    ``(3, 4, 4)``, ``(3, 2, 2)`` and level offsets 0, 192, 240. A box 40 x 40 centred at ``(36, 20)``
    (area 1600): shape IoUs ``10*13 / 1600 = 0.081``, ``16*30 / 1600 = 0.30``, ``33*23 / 1600 = 0.474`` (level 0);
    ``30*40 / (1600 + 1830 - 1200) = 0.538``, ``40*40 / (1600 + 2790 - 1600) = 0.573``,
    ``40*40 / (1600 + 7021 - 1600) = 0.228`` (level 1); ``40*40 / 10440 = 0.153`` and less (level 2). Best:
    level 1, anchor 1 ``(62, 45)``, stride 16: cell ``(int(36 / 16), int(20 / 16)) = (2, 1)``, prior
    ``192 + (1 * 4 + 1) * 4 + 2 = 214``. A prediction ``(16, 0, 56, 40)`` at prior 0 (IoU 1 with the box) is
    ignored with ``ignore_thresh = 0.5``; the same box predicted at prior 214 is not (it is positive).

    Args:
        priors (Priors): anchor priors of all levels; anchors from ``priors.level_anchors`` or
            ``priors.anchors``.
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input-image pixels.
        batch_size (int): B; every ``image_index`` must lie in ``[0, B)``.
        pred_boxes (Tensor[B, P, 4] | None): detached decoded xyxy boxes in pixels, for the ignore rule.
        ignore_thresh (float): in ``[0, 1]``; YOLOv3 uses 0.5, YOLOv2 0.6; 1.0 ignores nothing.

    Returns:
        Assignment: pairs ``batch_index``, ``prior_index``, ``gt_index`` (Tensor[M] long, ``M <= n``) in the
        order of the ``targets`` rows; ``ignore`` (Tensor[B, P] bool) when ``pred_boxes`` is given, else None;
        ``negative``, ``weight`` and ``score`` None. Empty targets give zero pairs (and an all-False
        ``ignore`` when ``pred_boxes`` is given).
    """
    where = "assign_yolov3"
    check_targets(targets, batch_size, where)
    _check_ignore_thresh(ignore_thresh, where)
    if priors.anchors is None and priors.level_anchors is None:
        raise ValueError(
            f"{where} needs anchor priors (priors.anchors is None); use an anchor-based prior generator "
            "(AnchorPriorGenerator) or a point-prior assigner"
        )
    device = targets.device
    num_priors = len(priors)
    if pred_boxes is not None and tuple(pred_boxes.shape) != (batch_size, num_priors, 4):
        raise ValueError(
            f"{where}: pred_boxes must be Tensor[B, P, 4] = ({batch_size}, {num_priors}, 4) decoded xyxy boxes, "
            f"got shape {tuple(pred_boxes.shape)}"
        )

    # table of every anchor of every level: (T,) each
    anchor_parts, level_parts, anchor_id_parts = [], [], []
    for level, (num_anchors, _, _) in enumerate(priors.level_shapes):
        anchor_parts.append(_level_anchors(priors, level).to(device=device, dtype=torch.float32))  # (A_l, 2)
        level_parts.append(torch.full((num_anchors,), level, dtype=torch.long, device=device))
        anchor_id_parts.append(torch.arange(num_anchors, dtype=torch.long, device=device))
    all_anchors = torch.cat(anchor_parts)  # (T, 2)
    anchor_level = torch.cat(level_parts)  # (T,)
    anchor_id = torch.cat(anchor_id_parts)  # (T,)
    shapes = torch.tensor(priors.level_shapes, dtype=torch.long, device=device)  # (L, 3) = A, H, W
    offsets = torch.tensor(priors.level_offsets[:-1], dtype=torch.long, device=device)  # (L,)
    level_strides = priors.strides[offsets.to(priors.strides.device)].to(device=device, dtype=torch.float32)  # (L,)

    boxes = targets[:, 2:6].float()  # (n, 4)
    wh = boxes[:, 2:] - boxes[:, :2]  # (n, 2)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (n, 2)
    shape_iou = box_iou(_origin_boxes(wh), _origin_boxes(all_anchors))  # (n, T)
    has_area = (wh > 0).all(dim=-1)  # (n,)
    best = shape_iou.argmax(dim=-1) if targets.shape[0] else torch.zeros(0, dtype=torch.long, device=device)  # (n,)

    gt_index = has_area.nonzero(as_tuple=True)[0]  # (M,)
    best = best[gt_index]  # (M,)
    level = anchor_level[best]  # (M,)
    height, width = shapes[level, 1], shapes[level, 2]  # (M,), (M,)
    cell = (centre[gt_index] / level_strides[level, None]).long()  # (M, 2), truncation as int()
    cell_x = torch.minimum(cell[:, 0].clamp(min=0), width - 1)
    cell_y = torch.minimum(cell[:, 1].clamp(min=0), height - 1)
    prior_index = offsets[level] + (anchor_id[best] * height + cell_y) * width + cell_x  # (M,)
    batch_index = targets[gt_index, 0].long()  # (M,)

    ignore = None
    if pred_boxes is not None:
        ignore = yolov3_ignore_mask(pred_boxes.to(device), targets, batch_size, ignore_thresh)  # (B, P)
        ignore[batch_index, prior_index] = False  # a positive is never ignored
    return Assignment(batch_index=batch_index, prior_index=prior_index, gt_index=gt_index, ignore=ignore)


class YOLOv3Assigner:
    """Callable wrapper of :func:`assign_yolov3` with the assigner interface of :mod:`detector.assigners.common`.

    Reads ``pred.boxes`` (detached decoded boxes) for the ignore rule; with ``pred`` None there is no ignore
    mask. Meant for several levels (YOLOv3: 3 levels x 3 anchors); the best anchor is chosen over all of them.

    Args:
        ignore_thresh (float): in ``[0, 1]``; a non-positive prior whose predicted box has IoU above it with a
            ground truth of its image is ignored. Darknet's ``yolov3.cfg`` uses 0.5 (0.7 in some later cfgs).
    """

    needs_predictions = True
    needs_scores = False  # the boxes of pred only
    needs_anchors = True
    name = "YOLOv3Assigner"

    def __init__(self, ignore_thresh: float = 0.5):
        _check_ignore_thresh(ignore_thresh, self.name)
        self.ignore_thresh = float(ignore_thresh)

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        pred_boxes = None if pred is None else pred.boxes.detach()
        return assign_yolov3(priors, targets, batch_size, pred_boxes=pred_boxes, ignore_thresh=self.ignore_thresh)

    def __repr__(self) -> str:
        return f"{self.name}(ignore_thresh={self.ignore_thresh})"


class YOLOv2Assigner(YOLOv3Assigner):
    """YOLOv2's assignment: the same rule as :class:`YOLOv3Assigner`, meant for a single level.

    YOLOv2 (``region_layer.c``, ``yolo-voc.cfg``) has one level (stride 32) with 5 anchors: each ground truth
    goes to the anchor of best shape IoU in its centre cell, and a prior whose predicted box has IoU > 0.6
    (``thresh = .6``) with a ground truth is ignored. With one level "best over all levels" is "best in the
    cell", so the rule is :func:`assign_yolov3`'s; what distinguishes this class is only the default
    ``ignore_thresh = 0.6`` and that it is meant for single-level priors (it does not enforce it: on several
    levels it behaves exactly as :class:`YOLOv3Assigner` with threshold 0.6). YOLOv2's other training details
    (objectness target = IoU with ``rescore``, object scale 5, the 12800-image anchor warm-up) belong to the
    criterion; see the module docstring.
    """

    name = "YOLOv2Assigner"

    def __init__(self, ignore_thresh: float = 0.6):
        super().__init__(ignore_thresh=ignore_thresh)
