"""Box regression losses on matched pairs, and ``BOX``, the config name -> function table.

Every loss has the signature ``fn(pred, target, *, reduction="none", eps=1e-7, **params)``:

* ``pred (Tensor[N, 4])``: predicted boxes, xyxy, float, differentiable.
* ``target (Tensor[N, 4])``: the matched ground-truth boxes, xyxy, same unit as ``pred``. The criterion divides
  both by the stride of each pair's prior, so the losses see grid-cell units: IoU losses do not care, and the
  coordinate losses then have magnitudes that do not depend on the level.
* ``reduction``: ``"none"`` -> Tensor[N] (one value per box), ``"mean"`` / ``"sum"`` -> scalar (the mean of no
  boxes is 0, not NaN).
* ``eps``: guards divisions, roots and logarithms. Losses with no division, root or logarithm accept it for a
  uniform call and ignore it.
* extra keyword inputs, passed by the criterion only to the functions that name them:
  ``pred_log_var (Tensor[N, 4])`` (``kl``) and ``image_size (Tensor[N])`` (``yolov3_mse``).

Coordinate losses (:mod:`detector.losses.coordinate`) give, per box, the sum of four per-coordinate terms: on
``(x1, y1, x2, y2)`` for ``mse``, ``l1``, ``smooth_l1``, ``huber``, ``balanced_l1``, ``focal_l1`` and ``kl``
(``rmse`` is the root of the ``mse`` sum), on ``(cx, cy, w, h)`` for ``yolov1`` and ``yolov3_mse``. IoU losses
(here, and later ones in :mod:`detector.losses.iou_variants`) build on the aligned family of
:mod:`detector.ops.boxes`, whose ``eps`` is measured in the frame of each pair's enclosing box (longer side 1),
so it means the same thing in pixels and in grid cells.

Names:

* ``eiou`` and ``focal_eiou`` are the Efficient IoU and Focal-EIoU of Zhang et al., "Focal and Efficient IOU Loss
  for Accurate Bounding Box Regression" (arXiv 2101.08158). mmdetection's ``EIoULoss`` is a different loss that
  shares the name: the Extended-IoU loss of Peng and Yu (IEEE 2021, "A Systematic IoU-Related Method: Beyond
  Simplified Regression for Better Localization", the ``smooth_point`` loss). Do not compare the two.
* ``focal_l1`` is the Focal-L1 loss of the same EIoU paper, not a focal-weighted L1 from other work.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from detector.ops.boxes import (
    aligned_ciou,
    aligned_diou,
    aligned_eiou,
    aligned_giou,
    aligned_iou,
)
from detector.losses.coordinate import (
    balanced_l1_loss,
    focal_l1_loss,
    huber_loss,
    kl_loss,
    l1_loss,
    mse_loss,
    rmse_loss,
    smooth_l1_loss,
    yolov1_loss,
    yolov3_mse_loss,
)
from detector.losses.iou_variants import ciou_mmdet_loss, mpdiou_loss, nwd_loss, shape_iou_loss, siou_loss
from detector.losses.iou_wrappers import alpha_iou_loss, inner_loss
from detector.losses.heatmap import centernet_l1_loss
from detector.losses.reduction import reduce_loss
from detector.losses.stateful import WIoULoss


# --------------------------------------------------------------------------------------------------- IoU losses


def iou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - IoU``. pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 1]``; no gradient for disjoint pairs."""
    return reduce_loss(1 - aligned_iou(pred, target, eps), reduction)


def log_iou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """UnitBox's ``-ln IoU``, with IoU clamped at ``eps`` (so at most ``-ln eps``; no gradient below it).

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, -ln eps]``.
    """
    return reduce_loss(-aligned_iou(pred, target, eps).clamp(min=eps).log(), reduction)


def giou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - GIoU``. pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 2]``."""
    return reduce_loss(1 - aligned_giou(pred, target, eps), reduction)


def diou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - DIoU = 1 - IoU + rho^2 / c^2``. pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 2)``."""
    return reduce_loss(1 - aligned_diou(pred, target, eps), reduction)


def ciou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - CIoU = 1 - IoU + rho^2 / c^2 + alpha v`` (``alpha`` without gradient).

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 3)``.
    """
    return reduce_loss(1 - aligned_ciou(pred, target, eps), reduction)


def eiou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Efficient IoU loss ``1 - IoU + rho^2 / c^2 + (w - w_t)^2 / C_w^2 + (h - h_t)^2 / C_h^2`` (Zhang et al.).

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 4)``.
    """
    return reduce_loss(1 - aligned_eiou(pred, target, eps), reduction)


def focal_eiou_loss(
    pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, gamma: float = 0.5
) -> Tensor:
    """Focal-EIoU loss ``IoU^gamma * L_EIoU`` (Zhang et al., arXiv 2101.08158).

    The weight ``IoU^gamma`` is **detached**: it re-weights each pair's EIoU loss (more weight to high-IoU,
    high-quality pairs) and is not itself minimised, as in the paper's implementation. Without the detach its
    gradient would push the IoU *down* (a lower weight lowers the loss). Normalisation over the batch is the
    criterion's ``avg_factor``, as for every other loss.

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N].
    """
    if gamma < 0:
        raise ValueError(f"focal_eiou gamma must be >= 0; got {gamma}")
    weight = aligned_iou(pred, target, eps).detach().pow(gamma)
    return reduce_loss(weight * (1 - aligned_eiou(pred, target, eps)), reduction)


BOX: dict[str, Callable[..., Tensor]] = {
    "mse": mse_loss,  # coordinate.py: coordinate losses
    "rmse": rmse_loss,
    "l1": l1_loss,
    "smooth_l1": smooth_l1_loss,
    "huber": huber_loss,
    "balanced_l1": balanced_l1_loss,
    "focal_l1": focal_l1_loss,
    "yolov1": yolov1_loss,
    "yolov3_mse": yolov3_mse_loss,
    "kl": kl_loss,
    "iou": iou_loss,
    "log_iou": log_iou_loss,
    "giou": giou_loss,
    "diou": diou_loss,
    "ciou": ciou_loss,
    "eiou": eiou_loss,
    "focal_eiou": focal_eiou_loss,
    "ciou_mmdet": ciou_mmdet_loss,  # iou_variants.py: later IoU-family losses
    "siou": siou_loss,
    "mpdiou": mpdiou_loss,
    "shape_iou": shape_iou_loss,
    "nwd": nwd_loss,
    "inner": inner_loss,  # iou_wrappers.py: a base loss named in the config, transformed
    "alpha_iou": alpha_iou_loss,
    "wiou": WIoULoss,  # stateful.py: a class; LossSpec makes one instance (one running mean) per spec
    "centernet_l1": centernet_l1_loss,  # heatmap.py: CenterNet's offset + 0.1 x size L1, on the coder's values
}
