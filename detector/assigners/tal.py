"""Task-aligned assignment (TOOD, Feng et al. 2021), as ultralytics' ``TaskAlignedAssigner`` runs it for YOLOv8
and YOLO26: the checked entry point :func:`assign_tal` with its presets, and the assigner class configs build.

The rules, in the order they run, and their vectorised implementation over padded ``(B, G, P)`` tensors are in
:mod:`detector.assigners.tal_steps`; :func:`stal_enlarge` and :func:`centres_inside` are re-exported here. Shape
letters as in :mod:`detector.structures`. Boxes are xyxy pixels of the network input.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from detector.assigners.common import check_targets
from detector.assigners.similarity import check_nwd_constant
from detector.assigners.tal_steps import (  # noqa: F401 (centres_inside, stal_enlarge re-exported)
    centres_inside, stal_enlarge, task_aligned_assignment,
)
from detector.ops.boxes import NWD_CONSTANT, aligned_ciou, aligned_iou, aligned_nwd
from detector.structures import Assignment, Predictions, Priors

IOU_TYPES = ("iou", "ciou", "nwd")


def _check_parameters(
    where: str,
    topk: int,
    alpha: float,
    beta: float,
    eps: float,
    iou_type: str,
    stal_min_size: float | None,
    stal_size: float | None,
    topk2: int | None,
) -> None:
    """Raise ValueError naming the first invalid parameter and what would be valid."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"{where}: topk must be an integer >= 1 (YOLOv8 uses 10, TOOD 13), got {topk!r}")
    if alpha < 0:
        raise ValueError(f"{where}: alpha must be >= 0 (YOLOv8 uses 0.5, TOOD 1.0), got {alpha}")
    if beta < 0:
        raise ValueError(f"{where}: beta must be >= 0 (YOLOv8 and TOOD use 6.0), got {beta}")
    if eps < 0:
        raise ValueError(f"{where}: eps must be >= 0 (ultralytics uses 1e-9), got {eps}")
    if iou_type not in IOU_TYPES:
        raise ValueError(f"{where}: iou_type must be one of {IOU_TYPES} (YOLOv8 uses 'ciou'), got {iou_type!r}")
    if stal_min_size is not None and not stal_min_size > 0:
        raise ValueError(f"{where}: stal_min_size must be None or > 0 pixels (YOLO26 uses 8), got {stal_min_size}")
    if stal_size is not None and stal_min_size is None:
        raise ValueError(f"{where}: stal_size={stal_size} needs stal_min_size (the side below which it applies)")
    if stal_size is not None and not stal_size > 0:
        raise ValueError(f"{where}: stal_size must be None or > 0 pixels (YOLO26 uses 16), got {stal_size}")
    if topk2 is not None and (isinstance(topk2, bool) or not isinstance(topk2, int) or topk2 < 1):
        raise ValueError(
            f"{where}: topk2 must be None or an integer >= 1 (YOLO26's one-to-one head uses 1), got {topk2!r}"
        )


def assign_tal(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    pred_boxes: Tensor,
    pred_scores: Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
    iou_type: str = "ciou",
    stal_min_size: float | None = None,
    stal_size: float | None = None,
    topk2: int | None = None,
    nwd_constant: float = NWD_CONSTANT,
) -> Assignment:
    """Task-aligned assignment of a batch: each gt takes its ``topk`` candidates of best ``s^alpha * IoU^beta``.

    The rules are listed in :mod:`detector.assigners.tal_steps`. Presets:

    * YOLOv8 (ultralytics ``v8DetectionLoss``): ``topk=10, alpha=0.5, beta=6.0, iou_type="ciou"`` (the defaults).
    * TOOD (Feng et al. 2021) and PP-YOLOE: ``topk=13, alpha=1.0, beta=6.0, iou_type="iou"`` (ultralytics'
      ``TaskAlignedAssigner`` class defaults to 13 / 1.0 / 6.0 too, but with CIoU).
    * YOLO26 (ultralytics ``E2ELoss``): the one-to-many head ``topk=10``, the one-to-one head ``topk=7, topk2=1``,
      both ``alpha=0.5, beta=6.0, iou_type="ciou", stal_min_size=8, stal_size=16``. Ultralytics' rule is: a gt side
      shorter than the finest stride (8 px) is set to the second stride (16 px), each side on its own, for the
      candidate test only; since that release its detection loss applies it to every model it trains.

    Where this differs from ultralytics, on purpose:

    * a candidate with metric exactly 0 (its CIoU clamped to 0, or a score of 0) is never positive. Ultralytics runs
      its top-k over all priors and intersects with the candidates, so when a gt has fewer than ``topk`` candidates
      of positive metric, zero-metric candidates may fill in, picked by ``torch.topk``'s tie order; there they get
      a soft target of 0 and so a zero box-loss weight, but here a loss may weight positives equally.
    * a conflict winner is always a gt the prior is a candidate of (ultralytics' ``argmax`` over all gts could pick
      padding or a non-candidate when every IoU is 0, e.g. with ``beta=0``). Kept from ultralytics: the winner is
      the gt of highest IoU among *all* gts the prior is a candidate of, which may be a gt that did not keep the
      prior in its top-k (mmdetection's TOOD assigner looks only at the gts that kept it).

    Worked example (``iou_type="iou", alpha=1, beta=2, topk=2``): one level of stride 8 with 1 x 3 cells, prior
    centres ``(4, 4), (12, 4), (20, 4)``; gt 0 = ``(0, 0, 16, 8)`` class 0, gt 1 = ``(8, 0, 24, 8)`` class 1.
    Candidates: gt 0 priors 0, 1; gt 1 priors 1, 2 (prior 0's centre x = 4 < 8; prior 2's 20 > 16).
    Predicted boxes ``(0, 0, 8, 8), (4, 0, 16, 8), (12, 0, 24, 8)``, scores of classes (0, 1): prior 0 ``(0.8, -)``,
    prior 1 ``(0.2, 0.9)``, prior 2 ``(-, 0.5)``. IoUs: gt 0 with priors 0, 1: ``64/128 = 0.5``, ``96/128 = 0.75``;
    gt 1 with priors 1, 2: ``64/160 = 0.4``, ``96/128 = 0.75``. Metrics ``s * u^2``: gt 0: ``0.8 * 0.25 = 0.2``,
    ``0.2 * 0.5625 = 0.1125``; gt 1: ``0.9 * 0.16 = 0.144``, ``0.5 * 0.5625 = 0.28125``. Top-2 keeps both
    candidates of each gt, so prior 1 is claimed twice: its metric favours gt 1 (0.144 > 0.1125) but its IoU
    favours gt 0 (0.75 > 0.4), and gt 0 wins. Pairs: (prior 0, gt 0), (prior 1, gt 0), (prior 2, gt 1). Scores:
    gt 0 (max metric 0.2, max IoU 0.75): ``0.2 / 0.2 * 0.75 = 0.75`` and ``0.1125 / 0.2 * 0.75 = 0.421875``;
    gt 1 (its only positive): ``0.75``. With ``topk=1``: gt 0 keeps prior 0, gt 1 prior 2, no conflict. With
    ``topk2=1``: gt 0 drops prior 1 (metric 0.1125 < 0.2) and prior 0's score becomes ``0.2 / 0.2 * 0.5 = 0.5``.

    Memory: at most two float (B, G, P) tensors (IoU and metric) and a few bool ones at a time (at B = 64, G = 50,
    P = 8400 in float32, 2 x 108 MB + 3 x 27 MB), plus the ``nonzero`` scans and, while the IoU is computed, a few
    hundred bytes per candidate pair (ultralytics gathers the same pairs). Measured on CUDA at that size with 50
    real boxes in every image: a peak of 0.44 GB above the inputs with COCO-like box sizes (4-400 px), 1.1 GB when
    every box is 200-640 px wide (K then a large share of B * G * P); 5-9 ms on an H200.

    Args:
        priors (Priors): priors of all levels; only their centres ``priors.centers`` are used (point or anchor).
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)``, class in ``[0, C)``.
        batch_size (int): B; every ``image_index`` must lie in ``[0, B)``.
        pred_boxes (Tensor[B, P, 4]): decoded predicted xyxy boxes in pixels (used without gradient).
        pred_scores (Tensor[B, P, C]): predicted class probabilities in ``[0, 1]`` (used without gradient).
        topk (int): candidates kept per gt (>= 1).
        alpha (float): exponent of the score (>= 0).
        beta (float): exponent of the IoU (>= 0).
        eps (float): margin of the inside-the-box test and the normaliser's guard (ultralytics: 1e-9).
        iou_type (str): ``"ciou"`` (YOLOv8, clamped at 0), ``"iou"`` (TOOD / PP-YOLOE) or ``"nwd"`` (the NWD of
            the predicted box and the gt, for tiny objects; then also in ``extras["iou"]`` and the soft target).
        stal_min_size (float | None): STAL: gt sides shorter than this many pixels are enlarged for the candidate
            test; None disables it (YOLO26: 8, the finest stride).
        stal_size (float | None): the side they get, in pixels; None means ``2 * stal_min_size`` (YOLO26: 16,
            the second stride). Needs ``stal_min_size``.
        topk2 (int | None): second top-k after conflicts (YOLO26 one-to-one head: 1); None, or equal to ``topk``,
            skips it (ultralytics skips the step when ``topk2 == topk``).
        nwd_constant (float): NWD's ``C`` in pixels (``iou_type="nwd"`` only; the NWD paper's 12.8).

    Returns:
        Assignment: one pair per positive prior (a prior has at most one gt), ordered by image, then prior;
        ``score`` (Tensor[M]) the soft class target; ``extras["iou"]`` (Tensor[M]) the pair's IoU (CIoU clamped
        at 0 with ``"ciou"``), ``extras["align_metric"]`` (Tensor[M]) its ``t``; ``ignore``, ``negative`` and
        ``weight`` None (every other prior is negative). No targets give zero pairs with empty ``score`` / extras.
    """
    where = "assign_tal"
    _check_parameters(where, topk, alpha, beta, eps, iou_type, stal_min_size, stal_size, topk2)
    check_nwd_constant(nwd_constant, where)
    check_targets(targets, batch_size, where)
    num_priors = len(priors)
    if pred_boxes.shape != (batch_size, num_priors, 4):
        raise ValueError(
            f"{where}: pred_boxes must be Tensor[B, P, 4] = ({batch_size}, {num_priors}, 4), got "
            f"{tuple(pred_boxes.shape)}"
        )
    if pred_scores.ndim != 3 or pred_scores.shape[:2] != (batch_size, num_priors):
        raise ValueError(
            f"{where}: pred_scores must be Tensor[B, P, C] with (B, P) = ({batch_size}, {num_priors}), got "
            f"{tuple(pred_scores.shape)}"
        )
    num_classes = pred_scores.shape[2]
    device = targets.device
    dtype = torch.promote_types(pred_boxes.dtype, torch.float32)
    if targets.shape[0] == 0 or num_priors == 0:
        return _no_pairs(device, dtype)
    labels = targets[:, 1].long()
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"{where}: targets[:, 1] (class) must lie in [0, C={num_classes}) (C from pred_scores), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    overlap = {"ciou": aligned_ciou, "iou": aligned_iou,
               "nwd": functools.partial(aligned_nwd, constant=nwd_constant, eps=0.0)}[iou_type]
    with torch.no_grad():
        return task_aligned_assignment(
            priors, targets, batch_size, pred_boxes.detach().to(dtype), pred_scores.detach(), topk, alpha, beta, eps,
            overlap, stal_min_size, stal_size, topk2,
        )


def _no_pairs(device: torch.device, dtype: torch.dtype) -> Assignment:
    result = Assignment.empty(device)
    empty = torch.zeros(0, dtype=dtype, device=device)
    result.score = empty
    result.extras = {"iou": empty.clone(), "align_metric": empty.clone()}
    return result


class TaskAlignedAssigner:
    """Callable wrapper of :func:`assign_tal` with the assigner interface of :mod:`detector.assigners.common`.

    Reads ``pred.boxes`` (decoded, detached) and ``pred.scores`` (per-class probabilities); works with point or
    anchor priors (only the prior centres are used). Defaults are YOLOv8's; see :func:`assign_tal` for the TOOD /
    PP-YOLOE and YOLO26 presets. ``weight_by_score`` also sets ``Assignment.weight`` to the soft score, so the box
    (and DFL) terms are score-weighted means, as YOLOv8 weights them.
    """

    needs_predictions = True
    needs_anchors = False

    def __init__(
        self,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        eps: float = 1e-9,
        iou_type: str = "ciou",
        stal_min_size: float | None = None,
        stal_size: float | None = None,
        topk2: int | None = None,
        weight_by_score: bool = True,
        nwd_constant: float = NWD_CONSTANT,
    ):
        _check_parameters("TaskAlignedAssigner", topk, alpha, beta, eps, iou_type, stal_min_size, stal_size, topk2)
        check_nwd_constant(nwd_constant, "TaskAlignedAssigner")
        self.topk = topk
        self.alpha = alpha
        self.beta = beta
        self.eps = eps
        self.iou_type = iou_type
        self.stal_min_size = stal_min_size
        self.stal_size = stal_size
        self.topk2 = topk2
        self.weight_by_score = bool(weight_by_score)
        self.nwd_constant = nwd_constant

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        if pred is None:
            raise ValueError(
                "TaskAlignedAssigner needs predictions (pred=None): pass Predictions(boxes=Tensor[B, P, 4], "
                "scores=Tensor[B, P, C]) decoded and detached"
            )
        assignment = assign_tal(
            priors, targets, batch_size, pred.boxes, pred.scores, topk=self.topk, alpha=self.alpha, beta=self.beta,
            eps=self.eps, iou_type=self.iou_type, stal_min_size=self.stal_min_size, stal_size=self.stal_size,
            topk2=self.topk2, nwd_constant=self.nwd_constant,
        )
        if self.weight_by_score:
            assignment.weight = assignment.score
        return assignment

    def __repr__(self) -> str:
        return (
            f"TaskAlignedAssigner(topk={self.topk}, alpha={self.alpha}, beta={self.beta}, eps={self.eps}, "
            f"iou_type={self.iou_type!r}, stal_min_size={self.stal_min_size}, stal_size={self.stal_size}, "
            f"topk2={self.topk2}, weight_by_score={self.weight_by_score}"
            f"{f', nwd_constant={self.nwd_constant}' if self.iou_type == 'nwd' else ''})"
        )
