"""Box losses that transform a base IoU loss named in their config: Inner-IoU and Alpha-IoU.

Same contract as :mod:`detector.losses.box` (pred, target Tensor[N, 4] xyxy in grid-cell units -> Tensor[N]); the
base is a config string::

    loss:
      box: {name: inner, ratio: 0.7, base: ciou}       # Inner-CIoU
      box: {name: alpha_iou, alpha: 3, base: diou}      # alpha-DIoU

``ratio: 1`` gives the base loss back, and so does ``alpha: 1`` (up to the dtype's smallest normal number, the
floor of the powers).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.losses.reduction import reduce_loss
from detector.ops.boxes import (
    aspect_consistency,
    centre_distance_ratio,
    enclosing_frame,
    enclosing_wh,
    iou_and_union,
    aligned_iou,
)

INNER_BASES = ("iou", "giou", "diou", "ciou", "ciou_mmdet", "eiou", "siou", "shape_iou")
ALPHA_BASES = ("iou", "giou", "diou", "ciou")


def inner_boxes(boxes: Tensor, ratio: float) -> Tensor:
    """boxes (Tensor[..., 4]) xyxy -> the auxiliary boxes of Inner-IoU: same centre, sides times ``ratio``."""
    centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) * (ratio / 2)
    return torch.cat((centre - half, centre + half), -1)


def inner_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, ratio: float = 0.7,
               base: str = "ciou") -> Tensor:
    """Inner-IoU of Zhang, Xu & Zhang 2023 ("Inner-IoU: More Effective Intersection over Union Loss with Auxiliary
    Bounding Box", arXiv 2311.02877): ``L_base + IoU - IoU_inner``.

    ``IoU_inner`` is the IoU of auxiliary boxes, each box scaled by ``ratio`` about its centre. A ratio below 1
    (smaller auxiliary boxes) makes the IoU term steeper for high-IoU pairs, above 1 gentler for low-IoU ones;
    ``ratio = 1`` is the base loss itself. For ``base: iou`` the loss is ``1 - IoU_inner``.

    Args:
        pred, target (Tensor[N, 4]): xyxy boxes.
        ratio: scale of the auxiliary boxes, > 0 (the paper's range 0.5..1.5).
        base: a name of ``BOX`` among ``INNER_BASES`` (losses of the form ``1 - IoU + penalty``), looked up when
            called.

    Returns:
        Tensor[N].
    """
    from detector.losses.box import BOX  # box.py imports this module; the table is complete once it is called

    if base not in INNER_BASES or base not in BOX:
        raise ValueError(f"inner base must be one of {', '.join(INNER_BASES)} (a loss 1 - IoU + penalty); got {base!r}")
    if ratio <= 0:
        raise ValueError(f"inner ratio must be > 0; got {ratio}")
    inner_iou = aligned_iou(inner_boxes(pred, ratio), inner_boxes(target, ratio), eps)  # (N,)
    loss = BOX[base](pred, target, eps=eps) + aligned_iou(pred, target, eps) - inner_iou
    return reduce_loss(loss, reduction)


def _power(x: Tensor, alpha: float) -> Tensor:
    """``x ** alpha`` for ``x >= 0``, with ``x`` floored at the dtype's smallest normal number: finite gradient for
    ``alpha < 1`` at 0, where the floor's own gradient (0) cancels it."""
    return x.clamp(min=torch.finfo(x.dtype).tiny).pow(alpha)


def alpha_iou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, alpha: float = 3.0,
                   base: str = "ciou") -> Tensor:
    """Alpha-IoU of He et al. 2021 ("Alpha-IoU: A Family of Power Intersection over Union Losses for Bounding Box
    Regression", NeurIPS 2021): every term of the base raised to the power ``alpha``.

    * ``iou``:  ``1 - IoU^a``
    * ``giou``: ``1 - IoU^a + ((|C| - |A u B|) / |C|)^a``
    * ``diou``: ``1 - IoU^a + (rho^2 / c^2)^a``
    * ``ciou``: ``1 - IoU^a + (rho^2 / c^2)^a + (beta v)^a``, ``beta = v / (1 - IoU + v)`` without gradient

    ``alpha > 1`` (3 in the paper) up-weights the loss and gradient of high-IoU pairs; ``alpha = 1`` is the base.

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N].
    """
    if base not in ALPHA_BASES:
        raise ValueError(f"alpha_iou base must be one of {', '.join(ALPHA_BASES)}; got {base!r}")
    if alpha <= 0:
        raise ValueError(f"alpha_iou alpha must be > 0; got {alpha}")
    b, t = enclosing_frame(pred, target)
    iou, union = iou_and_union(b, t, eps)  # (N,) each
    loss = 1 - _power(iou, alpha)
    if base == "giou":
        enclosing_area = enclosing_wh(b, t).prod(-1)
        loss = loss + _power((enclosing_area - union) / (enclosing_area + eps), alpha)
    elif base in ("diou", "ciou"):
        loss = loss + _power(centre_distance_ratio(b, t, enclosing_wh(b, t), eps), alpha)
    if base == "ciou":
        v = aspect_consistency(b, t, eps)
        with torch.no_grad():
            beta = v / (v - iou + (1 + eps))
        loss = loss + _power(beta * v, alpha)
    return reduce_loss(loss, reduction)
