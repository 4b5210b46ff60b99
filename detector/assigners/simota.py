"""SimOTA (YOLOX, Ge et al. 2021): a cost-based assignment with a dynamic number of priors per ground truth.

Vectorised over the batch: ground truth in the padded ``(B, G)`` layout of :func:`pad_targets`, the candidate
priors of every image gathered into a padded ``(B, Q)`` layout, costs and IoUs as ``(B, G, Q)`` tensors. There is
no Python loop over images or boxes (YOLOX loops over the images of a batch, then over the ground truths).

Letters as in :mod:`detector.structures`; here also ``Q`` = the most candidate priors in one image of the batch
(the candidate slots of image ``b`` are ``cand[b, :count[b]]``, the rest padding) and ``K`` = the largest
possible dynamic k, ``min(candidate_topk, Q)``.

The steps (candidates, cost, dynamic k, matching) are in :mod:`detector.assigners.simota_steps`, with which YOLOX
release they follow (candidates in the box OR its centre square, ``1e5`` added outside both), and are re-exported
here; this module holds the checked entry point :func:`assign_simota` and the assigner class configs build.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.common import check_targets, pad_targets
from detector.assigners.simota_steps import (  # noqa: F401 (the constants re-exported)
    BCE_LOG_MIN, IOU_COST_EPS, OUTSIDE_CENTRE_COST, simota_candidates, simota_cost, simota_dynamic_k,
    simota_matching,
)
from detector.structures import Assignment, Predictions, Priors


def _check_params(where: str, center_radius: float, candidate_topk: int, iou_weight: float, cls_weight: float) -> None:
    if not center_radius > 0:
        raise ValueError(f"{where}: center_radius must be > 0 strides (YOLOX uses 2.5), got {center_radius}")
    if isinstance(candidate_topk, bool) or int(candidate_topk) != candidate_topk or candidate_topk < 1:
        raise ValueError(f"{where}: candidate_topk must be an integer >= 1 (YOLOX uses 10), got {candidate_topk}")
    if not iou_weight >= 0:
        raise ValueError(f"{where}: iou_weight must be >= 0 (YOLOX uses 3.0), got {iou_weight}")
    if not cls_weight >= 0:
        raise ValueError(f"{where}: cls_weight must be >= 0 (YOLOX uses 1.0), got {cls_weight}")


def assign_simota(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    pred_boxes: Tensor,
    pred_scores: Tensor,
    center_radius: float = 2.5,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    cls_weight: float = 1.0,
    score_sqrt: bool = True,
) -> Assignment:
    """SimOTA: every ground truth takes its ``k`` cheapest candidate priors, ``k`` from its predictions' IoUs.

    Steps, for every image at once:

    1. Candidates (:func:`simota_candidates`): a prior is a candidate of a ground truth when its centre is
       strictly inside the box or strictly inside the centre square of half-side ``center_radius`` strides
       ("in box OR in centre", YOLOX's candidate set); the candidates of an image are the union over its ground
       truths. Costs, IoUs and the dynamic k of a ground truth run over all candidates of its image, as YOLOX's.
    2. Cost (:func:`simota_cost`): class BCE of ``sqrt(score)`` against the one-hot class, summed over classes,
       times ``cls_weight``, plus ``iou_weight * -log(IoU + 1e-8)``, plus ``1e5`` unless the prior is in the box
       AND in the centre square ("in both", YOLOX's cost bonus); priors that are no candidate of the image get
       ``+inf`` (never taken).
    3. Dynamic k (:func:`simota_dynamic_k`): ``max(1, int(sum of the candidate_topk largest IoUs))``.
    4. Matching (:func:`simota_matching`): the ``k`` lowest costs; a prior taken several times keeps the ground
       truth of lowest cost.

    One deliberate difference from YOLOX: a ground truth without any candidate prior of its own (not in any
    box / centre square, e.g. a box outside the grid) takes no prior and never wins a conflict. YOLOX would let
    it take one prior from the other ground truths' candidates at a cost above 1e5; with boxes inside the image
    this never happens, since the centre square always holds a prior.

    Worked example (``tests/assigners/test_simota_assigner.py``): one level of stride 8 on a 1 x 5 grid (prior
    centres ``x = 4, 12, 20, 28, 36``, ``y = 4``), ``center_radius = 1.5`` (12 px), two classes, ground truths
    A = class 0 ``(0, 0, 16, 8)`` and B = class 1 ``(8, 0, 32, 8)``. In both box and centre square: A priors 0, 1;
    B priors 1, 2, 3; prior 4 is no candidate. Predicted boxes ``(0,0,16,8), (1,0,17,8), (8,0,32,8),
    (16,0,32,8), (28,0,44,8)``: IoUs with A ``1, 0.882, 0.25, 0``, with B ``0.25, 0.290, 1, 0.667``. Scores
    ``(0.25, 0.25)`` except prior 1 ``(0.01, 0.81)`` and prior 3 ``(0.81, 0.01)``, so ``sqrt`` gives class costs
    ``2 ln 2 = 1.386`` for both classes, and ``-2 ln 0.1 = 4.605`` / ``-2 ln 0.9 = 0.211`` for prior 1 with A / B
    (prior 3: 0.211 / 4.605). Costs A ``[1.386, 4.605 + 3 * 0.125 = 4.981, 1e5 + 1.386 + 3 ln 4 = 1e5 + 5.545,
    1e5 + 0.211 + 55.26]``, B ``[1e5 + 5.545, 0.211 + 3 * 1.237 = 3.921, 1.386, 4.605 + 3 * 0.405 = 5.822]``.
    Dynamic k: A ``int(1 + 0.882 + 0.25) = 2``, B ``int(1 + 0.667 + 0.290 + 0.25) = 2``. A takes priors 0, 1;
    B takes 2, 1; prior 1 goes to B (3.921 < 4.981) although its IoU with A is higher. Pairs: prior 0 -> A
    (score 1), prior 1 -> B (0.290), prior 2 -> B (1); priors 3 and 4 are negative.

    Args:
        priors (Priors): anchor or point priors (only their centres and strides are used).
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input-image pixels.
        batch_size (int): B; every ``image_index`` must lie in ``[0, B)``.
        pred_boxes (Tensor[B, P, 4]): decoded xyxy pixels of every prior (detached inside).
        pred_scores (Tensor[B, P, C]): class probabilities in ``[0, 1]`` of every prior (detached inside),
            ``p_cls * p_obj`` for a YOLOX head (:func:`detection_scores`); every class must be ``< C``.
        center_radius: half-side of the centre square in strides (YOLOX 2.5).
        candidate_topk: number of largest IoUs summed for the dynamic k (YOLOX 10).
        iou_weight: weight of the IoU cost (YOLOX 3.0).
        cls_weight: weight of the class cost (YOLOX 1.0).
        score_sqrt: take the square root of ``pred_scores`` in the class cost (YOLOX's ``sqrt(p_cls * p_obj)``);
            False for scores that already are one.

    Returns:
        Assignment: at most one pair per prior, ordered by image, then prior; ``score`` (Tensor[M] float32) is the
        IoU of the pair's predicted box with its ground truth (YOLOX's class target is ``one_hot * IoU``);
        ``ignore``, ``negative`` and ``weight`` are None (every other prior is negative). Without targets or
        candidates it has zero pairs (and an empty ``score``).
    """
    where = "assign_simota"
    _check_params(where, center_radius, candidate_topk, iou_weight, cls_weight)
    check_targets(targets, batch_size, where)
    num_priors = len(priors)
    if pred_boxes.shape != (batch_size, num_priors, 4):
        raise ValueError(
            f"{where}: pred_boxes must be Tensor[B, P, 4] = ({batch_size}, {num_priors}, 4), got "
            f"{tuple(pred_boxes.shape)}"
        )
    if pred_scores.ndim != 3 or pred_scores.shape[:2] != (batch_size, num_priors) or pred_scores.shape[2] < 1:
        raise ValueError(
            f"{where}: pred_scores must be Tensor[B, P, C] with (B, P) = ({batch_size}, {num_priors}) and C >= 1, "
            f"got {tuple(pred_scores.shape)}"
        )
    device = targets.device
    empty = Assignment.empty(device)
    empty.score = torch.zeros(0, device=device)
    if targets.shape[0] == 0 or num_priors == 0:
        return empty
    num_classes = pred_scores.shape[2]
    labels = targets[:, 1].long()
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"{where}: targets[:, 1] (class) must lie in [0, C={num_classes}) (pred_scores has C classes), got "
            f"range [{int(labels.min())}, {int(labels.max())}]"
        )

    with torch.no_grad():
        padded = pad_targets(targets.float(), batch_size)
        centers = priors.centers.to(device=device, dtype=torch.float32)  # (P, 2)
        strides = priors.strides.to(device=device, dtype=torch.float32)  # (P,)
        in_box, in_centre = simota_candidates(centers, strides, padded.boxes, center_radius)  # (B, G, P) x2
        own = (in_box | in_centre) & padded.valid[:, :, None]  # (B, G, P)
        active = own.any(-1)  # (B, G): real ground truths with at least one candidate
        union = own.any(1)  # (B, P): candidates of each image
        count = union.sum(1)  # (B,)
        num_slots = int(count.max())
        if num_slots == 0:
            return empty

        # gather each image's candidates into slots 0..count[b]-1, in prior order
        image, prior = union.nonzero(as_tuple=True)  # (N,), (N,), row-major: by image, then prior
        slot = union.long().cumsum(1)[image, prior] - 1  # (N,)
        cand = torch.zeros(batch_size, num_slots, dtype=torch.long, device=device)  # (B, Q)
        cand[image, slot] = prior
        slot_valid = torch.arange(num_slots, device=device) < count[:, None]  # (B, Q)

        boxes_q = pred_boxes.detach().to(device).gather(1, cand[:, :, None].expand(-1, -1, 4))  # (B, Q, 4)
        scores_q = pred_scores.detach().to(device).gather(
            1, cand[:, :, None].expand(-1, -1, num_classes)
        )  # (B, Q, C)
        both_q = (in_box & in_centre).gather(2, cand[:, None, :].expand(-1, padded.max_boxes, -1))  # (B, G, Q)

        cost, iou = simota_cost(
            boxes_q, scores_q, padded.boxes, padded.labels, both_q, iou_weight, cls_weight, score_sqrt
        )  # (B, G, Q) x2
        usable = active[:, :, None] & slot_valid[:, None, :]  # (B, G, Q)
        cost = cost.masked_fill(~usable, float("inf"))
        iou = iou.masked_fill(~usable, 0.0)
        dynamic_k = simota_dynamic_k(iou, active, candidate_topk)  # (B, G)
        matched, positive = simota_matching(cost, dynamic_k)  # (B, Q) x2

        batch_index, slot_index = positive.nonzero(as_tuple=True)  # (M,), (M,): by image, then slot = prior order
        gt_slot = matched[batch_index, slot_index]  # (M,) index into G
        return Assignment(
            batch_index=batch_index,
            prior_index=cand[batch_index, slot_index],
            gt_index=padded.row[batch_index, gt_slot],
            score=iou[batch_index, gt_slot, slot_index],
        )


class SimOTAAssigner:
    """Callable wrapper of :func:`assign_simota` with the assigner interface of :mod:`detector.assigners.common`.

    Reads ``pred.boxes`` and ``pred.scores`` (:class:`Predictions`, detached), so ``needs_predictions`` is True;
    works with anchor or point priors (only centres and strides are used).
    """

    needs_predictions = True
    needs_anchors = False

    def __init__(
        self,
        center_radius: float = 2.5,
        candidate_topk: int = 10,
        iou_weight: float = 3.0,
        cls_weight: float = 1.0,
        score_sqrt: bool = True,
    ):
        _check_params("SimOTAAssigner", center_radius, candidate_topk, iou_weight, cls_weight)
        self.center_radius = center_radius
        self.candidate_topk = int(candidate_topk)
        self.iou_weight = iou_weight
        self.cls_weight = cls_weight
        self.score_sqrt = bool(score_sqrt)

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        if pred is None:
            raise ValueError(
                "SimOTAAssigner needs predictions: pass pred=Predictions(boxes=Tensor[B, P, 4] decoded xyxy, "
                "scores=Tensor[B, P, C] probabilities), detached (needs_predictions is True)"
            )
        return assign_simota(
            priors,
            targets,
            batch_size,
            pred.boxes,
            pred.scores,
            center_radius=self.center_radius,
            candidate_topk=self.candidate_topk,
            iou_weight=self.iou_weight,
            cls_weight=self.cls_weight,
            score_sqrt=self.score_sqrt,
        )

    def __repr__(self) -> str:
        return (
            f"SimOTAAssigner(center_radius={self.center_radius}, candidate_topk={self.candidate_topk}, "
            f"iou_weight={self.iou_weight}, cls_weight={self.cls_weight}, score_sqrt={self.score_sqrt})"
        )
