"""Matching on a (ground truth, prior) IoU matrix: one generic matcher (detectron2's ``Matcher`` kind), which
:mod:`detector.assigners.max_iou` configures as Faster R-CNN's RPN, RetinaNet or plain max-IoU, and SSD's matching.

Pure functions of ``iou (Tensor[B, G, P])`` and ``valid (Tensor[B, G])``: they never see a box, so any overlap
(IoU, or NWD with ``similarity="nwd"``) is matched the same way. Shape letters as in :mod:`detector.structures`:
``B`` images, ``G`` ground truths per image after padding (:func:`detector.assigners.common.pad_targets`), ``P``
priors; here also ``T`` the number of IoU thresholds.

Match labels (int8): ``1`` positive, ``0`` negative, ``-1`` ignored (neither positive nor negative).

Reference semantics: ``torchvision.models.detection._utils.Matcher`` / ``SSDMatcher`` (the same rules as
detectron2's ``Matcher``), with one deliberate difference, documented in :func:`match_max_iou` and
:func:`match_ssd`: a ground truth that overlaps no prior at all (best IoU 0, e.g. a zero-area box) gets no forced
or low-quality match, where torchvision would make every zero-IoU prior (Matcher) or prior 0 (SSDMatcher)
positive.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_PADDING_IOU = -1.0  # IoU given to padding ground truths: below every real IoU (>= 0), so padding never wins


def _check_match_inputs(iou: Tensor, valid: Tensor, where: str) -> None:
    if iou.ndim != 3 or valid.shape != iou.shape[:2] or valid.dtype != torch.bool:
        raise ValueError(
            f"{where}: iou must be Tensor[B, G, P] and valid a bool Tensor[B, G] of its first two dimensions, "
            f"got iou {tuple(iou.shape)} and valid {tuple(valid.shape)} {valid.dtype}"
        )


def _check_thresholds(thresholds: Sequence[float], labels: Sequence[int], where: str) -> None:
    if len(labels) != len(thresholds) + 1:
        raise ValueError(
            f"{where}: labels must have one entry more than thresholds (one label per IoU interval), got "
            f"thresholds {list(thresholds)} and labels {list(labels)}"
        )
    if any(label not in (-1, 0, 1) for label in labels):
        raise ValueError(f"{where}: labels must be -1 (ignore), 0 (negative) or 1 (positive), got {list(labels)}")
    if any(not 0.0 <= t <= 1.0 for t in thresholds) or any(a > b for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"{where}: thresholds must be non-decreasing values in [0, 1], got {list(thresholds)}")


def match_max_iou(
    iou: Tensor,
    valid: Tensor,
    thresholds: Sequence[float],
    labels: Sequence[int],
    allow_low_quality_matches: bool,
    min_pos_iou: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Match every prior to its best ground truth and label it by IoU intervals (detectron2's ``Matcher``).

    1. ``matched[b, p]`` is the valid ground truth of image ``b`` with the highest IoU with prior ``p`` (the
       lowest index among ties, as ``torch.max``); padding never wins.
    2. ``label[b, p] = labels[i]`` for the interval ``thresholds[i - 1] <= max IoU < thresholds[i]`` (with
       ``thresholds[-1] = -inf`` and ``thresholds[len] = +inf``): thresholds ``[0.3, 0.7]`` and labels
       ``[0, -1, 1]`` give IoU < 0.3 negative, ``[0.3, 0.7)`` ignored, ``>= 0.7`` positive.
    3. With ``allow_low_quality_matches``, for each ground truth every prior whose IoU with it equals its
       highest IoU over all priors (ties included) becomes positive (label 1). As in torchvision's
       ``Matcher.set_low_quality_matches_``, such a prior stays matched to *its own* best ground truth
       (step 1), which is not that ground truth when another one overlaps the prior more: the prior is then
       a positive of the other ground truth, and the first may end up with no positive at all. A ground
       truth keeps its low-quality matches only if its best IoU is > 0 and ``>= min_pos_iou`` (mmdetection's
       ``min_pos_iou``); torchvision has no such guard, so for a ground truth overlapping no prior it would
       turn every prior of IoU 0 with it into a positive.

    Priors of an image without ground truth get ``matched = -1`` and ``label = labels[0]`` (negative).

    Worked example (``B = 1``, ``G = 2``, ``P = 5``, thresholds ``[0.3, 0.7]``, labels ``[0, -1, 1]``)::

        iou[0] = [[0.9, 0.5, 0.1 , 0.0, 0.2 ],    # gt 0
                  [0.2, 0.6, 0.25, 0.0, 0.28]]    # gt 1
        best gt / IoU per prior: 0/0.9, 1/0.6, 1/0.25, 0/0.0 (tie, lowest index), 1/0.28
        by thresholds:           1,     -1,    0,      0,                        0
        low quality: gt 0's best prior is 0 (already positive), gt 1's is prior 1 (0.6) -> positive
        matched = [[0, 1, 1, 0, 1]], label = [[1, 1, 0, 0, 0]]

    Args:
        iou (Tensor[B, G, P]): float IoU of each (ground truth, prior) pair, values in ``[0, 1]`` for real
            ground truths (padding entries may hold anything).
        valid (Tensor[B, G]): bool, True for real ground truths, False for padding.
        thresholds (list[float]): non-decreasing, in ``[0, 1]``.
        labels (list[int]): ``len(thresholds) + 1`` labels in ``{-1, 0, 1}``, one per IoU interval.
        allow_low_quality_matches (bool): make the best prior(s) of every ground truth positive (step 3).
        min_pos_iou (float): the least best IoU for which a ground truth gets its low-quality matches.

    Returns:
        matched (Tensor[B, P] long): index in ``[0, G)`` of the best valid ground truth of each prior, whatever
            its label; -1 for every prior of an image without ground truth.
        label (Tensor[B, P] int8): 1 positive, 0 negative, -1 ignored.
    """
    _check_match_inputs(iou, valid, "match_max_iou")
    _check_thresholds(thresholds, labels, "match_max_iou")
    batch_size, _, num_priors = iou.shape
    iou = iou.masked_fill(~valid[:, :, None], _PADDING_IOU)  # (B, G, P)
    if num_priors == 0 or iou.shape[1] == 0:
        matched = iou.new_full((batch_size, num_priors), -1, dtype=torch.long)
        return matched, torch.full_like(matched, labels[0], dtype=torch.int8)

    max_iou, matched = iou.max(dim=1)  # (B, P), (B, P): first index among ties
    has_gt = valid.any(dim=1)  # (B,)
    matched = torch.where(has_gt[:, None], matched, -1)
    bounds = torch.tensor(list(thresholds), dtype=iou.dtype, device=iou.device)  # (T,)
    # (B, P) interval index i in [0, T] with bounds[i - 1] <= v < bounds[i]
    interval = torch.bucketize(max_iou.contiguous(), bounds, right=True)
    label = torch.tensor(list(labels), dtype=torch.int8, device=iou.device)[interval]  # (B, P)
    label = torch.where(has_gt[:, None], label, torch.tensor(labels[0], dtype=torch.int8, device=iou.device))

    if allow_low_quality_matches:
        best_of_gt = iou.amax(dim=2, keepdim=True)  # (B, G, 1)
        keeps = valid[:, :, None] & (best_of_gt > 0) & (best_of_gt >= min_pos_iou)  # (B, G, 1)
        low_quality = ((iou == best_of_gt) & keeps).any(dim=1)  # (B, P): best prior of some gt, ties included
        label = torch.where(low_quality, torch.ones_like(label), label)
    return matched, label


def match_ssd(iou: Tensor, valid: Tensor, threshold: float = 0.5) -> Tensor:
    """SSD's matching, as torchvision's ``SSDMatcher``: Tensor[B, P] long, the matched ground truth or -1.

    1. Every prior whose best IoU (over the valid ground truths) is ``>= threshold`` is matched to that best
       ground truth (lowest index among ties); the others get -1.
    2. Then each ground truth takes its best prior, whatever the IoU: ``argmax`` over the priors, so only
       the lowest-index prior among ties. This overrides step 1. When several ground truths have the same
       best prior, the one with the highest index in the image takes it (torchvision writes the ground
       truths in order, so the last write wins), and the others are left with their step-1 priors only.
       A ground truth that overlaps no prior (best IoU 0) forces nothing (torchvision would force prior 0).

    No ignore band: everything not matched is negative.

    Worked example (``B = 1``, ``G = 2``, ``P = 4``, threshold 0.5)::

        iou[0] = [[0.6, 0.55, 0.1, 0.0],    # gt 0
                  [0.7, 0.3 , 0.2, 0.2]]    # gt 1
        step 1: prior 0 -> gt 1 (0.7), prior 1 -> gt 0 (0.55), priors 2, 3 below 0.5 -> -1
        step 2: gt 0's best prior is 0, gt 1's best prior is also 0: gt 1 (the later) takes it
        matched = [[1, 0, -1, -1]]

    Args:
        iou (Tensor[B, G, P]): float IoU, in ``[0, 1]`` for real ground truths.
        valid (Tensor[B, G]): bool, True for real ground truths.
        threshold (float): the IoU from which a prior is matched, in ``[0, 1]``.

    Returns:
        Tensor[B, P] long: index in ``[0, G)`` of the matched ground truth, -1 for negatives.
    """
    _check_match_inputs(iou, valid, "match_ssd")
    matched, label = match_max_iou(iou, valid, [threshold], [0, 1], allow_low_quality_matches=False)
    matched = torch.where(label == 1, matched, -1)  # (B, P)
    if iou.shape[2] == 0 or iou.shape[1] == 0:
        return matched
    iou = iou.masked_fill(~valid[:, :, None], _PADDING_IOU)  # (B, G, P)
    best_iou, best_prior = iou.max(dim=2)  # (B, G), (B, G): lowest prior index among ties
    gt_index = torch.arange(iou.shape[1], device=iou.device).expand_as(best_prior)  # (B, G)
    forcing = torch.where(valid & (best_iou > 0), gt_index, -1)  # (B, G): -1 forces nothing
    forced = torch.full_like(matched, -1).scatter_reduce(1, best_prior, forcing, reduce="amax")  # (B, P)
    return torch.where(forced >= 0, forced, matched)
