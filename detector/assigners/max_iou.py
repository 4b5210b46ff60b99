"""IoU assignment of anchors to ground truth: the assigners configured from the generic matcher of
:mod:`detector.assigners.matcher` (Faster R-CNN's RPN, RetinaNet, plain max-IoU) plus SSD's matching.

Shape letters as in :mod:`detector.structures`: ``B`` images, ``G`` ground truths per image after padding
(:func:`detector.assigners.common.pad_targets`), ``P`` priors.
Boxes are xyxy pixels of the network input; an anchor prior is the box
``(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)`` of its cell centre ``priors.centers`` and its size
``priors.anchors``.

The matching rules, the match labels and where they differ from torchvision's ``Matcher`` / ``SSDMatcher`` are
in :mod:`detector.assigners.matcher`; :func:`match_max_iou` and :func:`match_ssd` are re-exported here.

``similarity="nwd"`` (every assigner here) ranks and thresholds the pairs by NWD instead of IoU
(:mod:`detector.assigners.similarity`): thresholds and labels are unchanged, and since NWD is never 0, every
ground truth, however tiny or far from the anchors, has a best prior for the low-quality and SSD forced matches.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.assigners.common import PaddedTargets, assignment_from_matches, check_targets, pad_targets
from detector.assigners.matcher import match_max_iou, match_ssd
from detector.assigners.similarity import check_similarity, pairwise_similarity
from detector.ops.boxes import NWD_CONSTANT
from detector.structures import Assignment, Predictions, Priors


def anchor_boxes(priors: Priors) -> Tensor:
    """Tensor[P, 4] float32 xyxy pixels of the anchor priors: ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``."""
    centers = priors.centers.float()  # (P, 2)
    half = priors.anchors.float() / 2  # (P, 2)
    return torch.cat((centers - half, centers + half), dim=1)  # (P, 4)


def gt_prior_iou(
    priors: Priors, padded: PaddedTargets, similarity: str = "iou", nwd_constant: float = NWD_CONSTANT
) -> Tensor:
    """Tensor[B, G, P] float32: IoU of every padded ground truth with every anchor prior (0 on padding rows);
    with ``similarity="nwd"`` the NWD of :func:`detector.ops.boxes.box_nwd` instead.

    Only the ``n`` real boxes are compared with the anchors (padding every image to the most boxes of the batch
    multiplies the rows by about 7 on coco128 at batch 64); their rows are then written into the zero-filled
    ``(B, G, P)`` tensor the matchers take. Memory: that tensor, ``B * G * P * 4`` bytes (323 MB at ``B = 64``,
    ``G = 50``, ``P = 25200``), plus :func:`detector.ops.boxes.box_iou`'s few ``(n, P, 2)`` intermediates.
    """
    batch_size, max_boxes = padded.boxes.shape[:2]
    anchors = anchor_boxes(priors).to(padded.boxes.device)  # (P, 4)
    valid = padded.valid.reshape(-1)  # (B*G,)
    gt_boxes = padded.boxes.float().reshape(batch_size * max_boxes, 4)[valid]  # (n, 4)
    iou = anchors.new_zeros(batch_size * max_boxes, anchors.shape[0])  # (B*G, P)
    iou[valid] = pairwise_similarity(gt_boxes, anchors, similarity, nwd_constant)  # (n, P) rows
    return iou.reshape(batch_size, max_boxes, -1)  # (B, G, P)


def _check_anchor_priors(priors: Priors, where: str) -> None:
    if priors.anchors is None:
        raise ValueError(
            f"{where} needs anchor priors (priors.anchors is None); use AnchorPriorGenerator, or a point-prior "
            f"assigner for anchor-free heads"
        )


def _check_iou_pair(pos_iou: float, neg_iou: float, min_pos_iou: float, where: str) -> None:
    if not 0.0 <= neg_iou <= pos_iou <= 1.0:
        raise ValueError(
            f"{where}: need 0 <= neg_iou <= pos_iou <= 1 (RPN uses pos_iou=0.7, neg_iou=0.3), got "
            f"pos_iou={pos_iou}, neg_iou={neg_iou}"
        )
    if not 0.0 <= min_pos_iou <= 1.0:
        raise ValueError(f"{where}: min_pos_iou must be in [0, 1], got {min_pos_iou}")


def assign_max_iou(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    pos_iou: float,
    neg_iou: float,
    allow_low_quality_matches: bool = True,
    min_pos_iou: float = 0.0,
    similarity: str = "iou",
    nwd_constant: float = NWD_CONSTANT,
) -> Assignment:
    """Max-IoU assignment of anchors (Faster R-CNN's RPN, RetinaNet): :func:`match_max_iou` with thresholds
    ``[neg_iou, pos_iou]`` and labels ``[0, -1, 1]`` on :func:`gt_prior_iou`.

    An anchor whose best IoU is ``>= pos_iou`` is positive, paired with that ground truth; ``< neg_iou``
    negative; in between ignored; with ``allow_low_quality_matches`` the best anchor(s) of each ground truth
    are positive too (see :func:`match_max_iou` for which ground truth they are paired with).

    Worked example: one level of stride 16, one ``16 x 16`` anchor per cell on a ``2 x 2`` grid, so the anchors
    are the boxes ``[0, 0, 16, 16]``, ``[16, 0, 32, 16]``, ``[0, 16, 16, 32]``, ``[16, 16, 32, 32]``; one target
    ``(0, cls, 4, 0, 20, 16)``, ``pos_iou = 0.7``, ``neg_iou = 0.3``. IoU with anchor 0 = ``12 * 16 / (2 * 256 -
    192) = 0.6`` (ignore band), with anchor 1 = ``4 * 16 / (512 - 64) = 0.14`` (negative), 0 with the others.
    Anchor 0 is the target's best, so with low-quality matches it is positive: pairs ``[(0, 0, 0)]``, nothing
    ignored; without them no pair and ``ignore[0] = [True, False, False, False]``.

    Args:
        priors (Priors): anchor priors (``priors.anchors`` not None), P of them.
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input pixels.
        batch_size (int): B.
        pos_iou, neg_iou (float): ``0 <= neg_iou <= pos_iou <= 1``.
        allow_low_quality_matches (bool), min_pos_iou (float): see :func:`match_max_iou`.
        similarity (str): ``"iou"`` or ``"nwd"`` (then the thresholds apply to NWD); nwd_constant (float): its
            ``C`` in pixels.

    Returns:
        Assignment: one pair per positive anchor (ordered by image, then prior) with ``gt_index`` the row of
        ``targets``; ``ignore`` (Tensor[B, P] bool) the anchors in the ignore band; every other anchor is
        negative (``negative`` None). No targets give zero pairs and an all-False ``ignore``.
    """
    _check_anchor_priors(priors, "assign_max_iou")
    _check_iou_pair(pos_iou, neg_iou, min_pos_iou, "assign_max_iou")
    check_similarity(similarity, nwd_constant, "assign_max_iou")
    check_targets(targets, batch_size, "assign_max_iou")
    padded = pad_targets(targets, batch_size)
    iou = gt_prior_iou(priors, padded, similarity, nwd_constant)  # (B, G, P)
    matched, label = match_max_iou(
        iou, padded.valid, [neg_iou, pos_iou], [0, -1, 1], allow_low_quality_matches, min_pos_iou
    )
    del iou
    return assignment_from_matches(torch.where(label == 1, matched, -1), padded, ignore=label == -1)


def assign_ssd(
    priors: Priors, targets: Tensor, batch_size: int, iou_threshold: float = 0.5, similarity: str = "iou",
    nwd_constant: float = NWD_CONSTANT,
) -> Assignment:
    """SSD's assignment: :func:`match_ssd` on :func:`gt_prior_iou` (each ground truth's best anchor, then every
    anchor with IoU ``>= iou_threshold`` with its best ground truth).

    Worked example (the anchors of :func:`assign_max_iou`'s example): a target ``(0, cls, 8, 0, 24, 16)`` on the
    border between anchors 0 and 1 has IoU ``8 * 16 / (512 - 128) = 1/3`` with both; neither reaches 0.5, and
    its best anchor is the lower index among the tie, so the only pair is ``(0, 0, 0)``.

    ``similarity="nwd"`` matches on NWD (``C = nwd_constant`` pixels) instead of IoU, ``iou_threshold`` included.

    Returns:
        Assignment: one pair per matched anchor (ordered by image, then prior); ``ignore`` and ``negative`` None
        (every other anchor is negative; SSD's hard-negative mining is a separate sampler).
    """
    _check_anchor_priors(priors, "assign_ssd")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"assign_ssd: iou_threshold must be in [0, 1] (SSD uses 0.5), got {iou_threshold}")
    check_similarity(similarity, nwd_constant, "assign_ssd")
    check_targets(targets, batch_size, "assign_ssd")
    padded = pad_targets(targets, batch_size)
    matched = match_ssd(gt_prior_iou(priors, padded, similarity, nwd_constant), padded.valid, iou_threshold)  # (B, P)
    return assignment_from_matches(matched, padded)


class MaxIoUAssigner:
    """Callable wrapper of :func:`assign_max_iou` with the assigner interface of :mod:`detector.assigners.common`.

    Presets: :func:`rpn_assigner` (0.7 / 0.3, low-quality matches, Faster R-CNN's RPN) and
    :func:`retinanet_assigner` (0.5 / 0.4, low-quality matches). ``pred`` is accepted and ignored.
    ``similarity="nwd"`` (config ``assigner: {name: rpn, similarity: nwd}``) matches on NWD instead of IoU.
    """

    needs_predictions = False
    needs_anchors = True

    def __init__(
        self, pos_iou: float, neg_iou: float, allow_low_quality_matches: bool = True, min_pos_iou: float = 0.0,
        similarity: str = "iou", nwd_constant: float = NWD_CONSTANT,
    ):
        _check_iou_pair(pos_iou, neg_iou, min_pos_iou, "MaxIoUAssigner")
        check_similarity(similarity, nwd_constant, "MaxIoUAssigner")
        self.pos_iou = pos_iou
        self.neg_iou = neg_iou
        self.allow_low_quality_matches = allow_low_quality_matches
        self.min_pos_iou = min_pos_iou
        self.similarity = similarity
        self.nwd_constant = nwd_constant

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        return assign_max_iou(
            priors, targets, batch_size, self.pos_iou, self.neg_iou, self.allow_low_quality_matches, self.min_pos_iou,
            self.similarity, self.nwd_constant,
        )

    def __repr__(self) -> str:
        return (
            f"MaxIoUAssigner(pos_iou={self.pos_iou}, neg_iou={self.neg_iou}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, min_pos_iou={self.min_pos_iou}"
            f"{_similarity_repr(self.similarity, self.nwd_constant)})"
        )


class SSDAssigner:
    """Callable wrapper of :func:`assign_ssd` with the assigner interface; ``pred`` is accepted and ignored."""

    needs_predictions = False
    needs_anchors = True

    def __init__(self, iou_threshold: float = 0.5, similarity: str = "iou", nwd_constant: float = NWD_CONSTANT):
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"SSDAssigner: iou_threshold must be in [0, 1] (SSD uses 0.5), got {iou_threshold}")
        check_similarity(similarity, nwd_constant, "SSDAssigner")
        self.iou_threshold = iou_threshold
        self.similarity = similarity
        self.nwd_constant = nwd_constant

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        return assign_ssd(priors, targets, batch_size, self.iou_threshold, self.similarity, self.nwd_constant)

    def __repr__(self) -> str:
        return f"SSDAssigner(iou_threshold={self.iou_threshold}{_similarity_repr(self.similarity, self.nwd_constant)})"


def _similarity_repr(similarity: str, nwd_constant: float) -> str:
    """``", similarity='nwd', nwd_constant=12.8"`` for NWD, nothing for the default IoU (reprs stay as they were)."""
    return f", similarity={similarity!r}, nwd_constant={nwd_constant}" if similarity != "iou" else ""


def rpn_assigner() -> MaxIoUAssigner:
    """Faster R-CNN's RPN matching: positive IoU >= 0.7, negative < 0.3, low-quality matches on."""
    return MaxIoUAssigner(pos_iou=0.7, neg_iou=0.3, allow_low_quality_matches=True)


def retinanet_assigner() -> MaxIoUAssigner:
    """RetinaNet's matching: positive IoU >= 0.5, negative < 0.4, low-quality matches on."""
    return MaxIoUAssigner(pos_iou=0.5, neg_iou=0.4, allow_low_quality_matches=True)


def ssd_assigner() -> SSDAssigner:
    """SSD's matching with its IoU threshold 0.5."""
    return SSDAssigner(iou_threshold=0.5)
