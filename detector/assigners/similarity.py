"""The overlap an assigner ranks (ground truth, prior) pairs by: IoU, or NWD for tiny objects.

``similarity="nwd"`` replaces the IoU by the normalized Gaussian Wasserstein distance ``exp(-W_2 / C)`` (Wang et
al. 2021, arXiv 2110.13389; :func:`detector.ops.boxes.box_nwd`), with ``C = nwd_constant`` pixels (12.8 by default,
the paper's mean object size of AI-TOD). Thresholds keep their meaning as values in ``[0, 1]``, now on NWD. Where
the IoU of a tiny box with every prior is 0 or jumps with a one-pixel shift, the NWD still ranks the priors by the
distance between centres and sizes: with max-IoU matching such a box gets positives; in ATSS the prior-centre-inside
rule still applies, and NWD separates candidates only where C is near the object size (``docs/assigners.md``).

The max-IoU family (``rpn``, ``retinanet``, ``max_iou``, ``ssd``) and ATSS take ``similarity`` and
``nwd_constant``; TAL takes ``iou_type: nwd`` (its own name for the same choice) and ``nwd_constant``.
"""
from __future__ import annotations

import math

from torch import Tensor

from detector.ops.boxes import NWD_CONSTANT, aligned_nwd, box_iou, box_nwd, iou_and_union

SIMILARITIES = ("iou", "nwd")


def check_similarity(similarity: str, nwd_constant: float, where: str, key: str = "similarity") -> None:
    """Raise ValueError naming ``key`` and the valid values unless ``similarity`` is one of :data:`SIMILARITIES`
    and ``nwd_constant`` a finite number > 0."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"{where}: {key} must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    check_nwd_constant(nwd_constant, where)


def check_nwd_constant(nwd_constant: float, where: str) -> None:
    """Raise ValueError unless ``nwd_constant`` is a finite number > 0."""
    if isinstance(nwd_constant, bool) or not isinstance(nwd_constant, (int, float)) or \
            not (math.isfinite(nwd_constant) and nwd_constant > 0):
        raise ValueError(
            f"{where}: nwd_constant must be a finite number > 0 (pixels; the NWD paper uses {NWD_CONSTANT}), got "
            f"{nwd_constant!r}"
        )


def pairwise_similarity(boxes1: Tensor, boxes2: Tensor, similarity: str, nwd_constant: float = NWD_CONSTANT) -> Tensor:
    """boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4]) xyxy pixels -> Tensor[N, M] IoU or NWD, in ``[0, 1]``."""
    if similarity == "nwd":
        return box_nwd(boxes1, boxes2, nwd_constant)
    return box_iou(boxes1, boxes2)


def aligned_similarity(boxes1: Tensor, boxes2: Tensor, similarity: str, nwd_constant: float = NWD_CONSTANT) -> Tensor:
    """boxes1, boxes2 (Tensor[..., 4]) xyxy pixels, broadcastable -> Tensor[...] IoU or NWD of aligned pairs.

    Both are computed in pixel units (no per-pair frame), so pairs of the same geometry up to a translation by whole
    pixels get bitwise-equal values (ATSS relies on it, see :func:`detector.assigners.atss.assign_atss`). NWD uses
    ``eps = 0``: identical boxes give exactly 1.
    """
    if similarity == "nwd":
        return aligned_nwd(boxes1, boxes2, nwd_constant, eps=0.0)
    return iou_and_union(boxes1, boxes2, 1e-7)[0]
