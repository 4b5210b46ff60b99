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

Coordinate losses give, per box, the sum of four per-coordinate terms: on ``(x1, y1, x2, y2)`` for ``mse``, ``l1``,
``smooth_l1``, ``huber``, ``balanced_l1``, ``focal_l1`` and ``kl`` (``rmse`` is the root of the ``mse`` sum), on
``(cx, cy, w, h)`` for ``yolov1`` and ``yolov3_mse``. IoU losses build on the aligned family of
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

import math
from typing import Callable

import torch
from torch import Tensor

from detector.ops.boxes import (
    aligned_ciou,
    aligned_diou,
    aligned_eiou,
    aligned_giou,
    aligned_iou,
    xyxy_to_cxcywh,
)
from detector.losses.iou_variants import ciou_mmdet_loss, mpdiou_loss, nwd_loss, shape_iou_loss, siou_loss
from detector.losses.iou_wrappers import alpha_iou_loss, inner_loss
from detector.losses.heatmap import centernet_l1_loss
from detector.losses.reduction import reduce_loss
from detector.losses.stateful import WIoULoss


# ---------------------------------------------------------------------------------------------- coordinate losses


def mse_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Squared error summed over the four coordinates: ``sum_k (p_k - t_k)^2``.

    The "mean" of the name is the reduction over boxes. pred, target (Tensor[N, 4]) xyxy -> Tensor[N]
    (``eps`` unused).
    """
    return reduce_loss((pred - target).pow(2).sum(-1), reduction)


def rmse_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Root of the squared error: ``sqrt(sum_k (p_k - t_k)^2 + eps)``, the Euclidean distance of the two 4-vectors.

    ``eps`` keeps the gradient finite at zero error (it is ``1 / (2 sqrt(eps))`` times the direction there).
    pred, target (Tensor[N, 4]) xyxy -> Tensor[N].
    """
    return reduce_loss(((pred - target).pow(2).sum(-1) + eps).sqrt(), reduction)


def l1_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Absolute error summed over the four coordinates.

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] (``eps`` unused).
    """
    return reduce_loss((pred - target).abs().sum(-1), reduction)


def smooth_l1_loss(
    pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, beta: float = 1.0
) -> Tensor:
    """Fast R-CNN's smooth L1, per coordinate ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``.

    ``beta = 0`` is plain L1. pred, target (Tensor[N, 4]) xyxy -> Tensor[N] summed over coordinates
    (``eps`` unused).
    """
    if beta < 0:
        raise ValueError(f"smooth_l1 beta must be >= 0; got {beta}")
    x = (pred - target).abs()
    if beta == 0:
        return reduce_loss(x.sum(-1), reduction)
    per_coord = torch.where(x < beta, 0.5 * x.pow(2) / beta, x - 0.5 * beta)
    return reduce_loss(per_coord.sum(-1), reduction)


def huber_loss(
    pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, delta: float = 1.0
) -> Tensor:
    """Huber loss, per coordinate ``0.5 x^2`` if ``|x| < delta`` else ``delta (|x| - 0.5 delta)``.

    Equal to ``delta * smooth_l1(beta=delta)``. pred, target (Tensor[N, 4]) xyxy -> Tensor[N] summed over
    coordinates (``eps`` unused).
    """
    if delta <= 0:
        raise ValueError(f"huber delta must be > 0; got {delta}")
    x = (pred - target).abs()
    per_coord = torch.where(x < delta, 0.5 * x.pow(2), delta * (x - 0.5 * delta))
    return reduce_loss(per_coord.sum(-1), reduction)


def balanced_l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    eps: float = 1e-7,
    alpha: float = 0.5,
    gamma: float = 1.5,
    beta: float = 1.0,
) -> Tensor:
    """Balanced L1 loss of Libra R-CNN (Pang et al. 2019).

    The loss is designed from its gradient: ``dL/d|x| = alpha ln(b |x| / beta + 1)`` for ``|x| < beta`` and
    ``gamma`` beyond, with ``b = e^(gamma / alpha) - 1`` so that the two agree at ``|x| = beta = 1``
    (``alpha ln(b + 1) = gamma``). Integrating, per coordinate:

        ``alpha / b * (b|x| + 1) ln(b|x| / beta + 1) - alpha |x|``   if ``|x| < beta``
        ``gamma |x| + gamma / b - alpha beta``                       otherwise

    where the constant ``gamma / b - alpha beta`` makes the value continuous at ``|x| = beta``.
    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] summed over coordinates (``eps`` unused).
    """
    if alpha <= 0 or gamma <= 0 or beta <= 0:
        raise ValueError(f"balanced_l1 needs alpha, gamma, beta > 0; got {alpha}, {gamma}, {beta}")
    b = math.exp(gamma / alpha) - 1
    x = (pred - target).abs()
    inner = alpha / b * (b * x + 1) * torch.log(b * x / beta + 1) - alpha * x
    outer = gamma * x + gamma / b - alpha * beta
    return reduce_loss(torch.where(x < beta, inner, outer).sum(-1), reduction)


def focal_l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    eps: float = 1e-7,
    beta: float = 1 / math.e,
    alpha: float | None = None,
) -> Tensor:
    """Focal-L1 loss of the EIoU paper (Zhang et al., arXiv 2101.08158, section "Focal L1 loss").

    Like Balanced L1, it is defined by its gradient magnitude in the absolute error ``x = |p - t|``:

        ``g(x) = -alpha x ln(beta x)``   for ``0 < x <= 1``
        ``g(x) = -alpha ln(beta)``       for ``x > 1``

    (continuous at ``x = 1``). It rises from 0, peaks at ``x = 1 / (e beta)`` with value ``alpha / (e beta)``, then
    falls to ``-alpha ln(beta)`` and stays there, so large errors (low-quality examples) get a smaller gradient
    than medium ones. ``1 / e <= beta <= 1`` puts the peak inside ``(0, 1]`` and keeps ``g >= 0``; ``beta = 1 / e``
    (the default) peaks at ``x = 1`` and does not damp large errors, ``beta = 1`` silences them entirely. The
    paper asks for a normalised gradient range ``(0, 1]``; ``alpha = None`` picks ``alpha = e beta``, which makes
    the peak exactly 1.

    Loss, by integrating ``g`` from 0 (``integral x ln(beta x) dx = x^2 (2 ln(beta x) - 1) / 4``):

        ``L(x) = -alpha x^2 (2 ln(beta x) - 1) / 4``   for ``x <= 1``
        ``L(x) = -alpha ln(beta) x + C``               for ``x > 1``

    Continuity constant: at ``x = 1`` the first branch is ``-alpha (2 ln beta - 1) / 4`` and the second
    ``-alpha ln beta + C``; equating them gives ``C = alpha ln beta - alpha (2 ln beta - 1) / 4
    = (2 alpha ln beta + alpha) / 4``, the paper's constant. ``L(0) = 0`` (``x^2 ln x -> 0``; the logarithm's
    argument is clamped at the dtype's smallest normal number so that no ``0 * inf`` appears).

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] summed over coordinates (``eps`` unused).
    """
    if not 0 < beta <= 1:
        raise ValueError(f"focal_l1 beta must be in (0, 1] (1/e..1 for a gradient peak inside (0, 1]); got {beta}")
    a = math.e * beta if alpha is None else alpha
    log_beta = math.log(beta)
    x = (pred - target).abs()
    tiny = torch.finfo(x.dtype).tiny
    inner = -a * x.pow(2) * (2 * torch.log(beta * x.clamp(min=tiny)) - 1) / 4
    outer = -a * log_beta * x + (2 * a * log_beta + a) / 4
    return reduce_loss(torch.where(x <= 1, inner, outer).sum(-1), reduction)


def yolov1_loss(
    pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, lambda_coord: float = 5.0
) -> Tensor:
    """YOLOv1's box term, ``(cx, cy, w, h)`` of pred unprimed and of target primed:

        ``lambda_coord * [(cx - cx')^2 + (cy - cy')^2 + (sqrt w - sqrt w')^2 + (sqrt h - sqrt h')^2]``

    The square roots make an error on a small box cost more than the same error on a large one; they are taken as
    ``sqrt(max(w, 0) + eps)`` so the gradient stays finite for zero-size boxes.
    pred, target (Tensor[N, 4]) xyxy -> Tensor[N].
    """
    p, t = xyxy_to_cxcywh(pred), xyxy_to_cxcywh(target)  # (N, 4) (cx, cy, w, h)
    centre = (p[:, :2] - t[:, :2]).pow(2).sum(-1)
    root_p = (p[:, 2:].clamp(min=0) + eps).sqrt()
    root_t = (t[:, 2:].clamp(min=0) + eps).sqrt()
    size = (root_p - root_t).pow(2).sum(-1)
    return reduce_loss(lambda_coord * (centre + size), reduction)


def yolov3_mse_loss(
    pred: Tensor, target: Tensor, *, image_size: Tensor | float, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """YOLOv3's box term: ``(2 - w_t h_t / S^2) * [(cx - cx')^2 + (cy - cy')^2 + (w - w')^2 + (h - h')^2]``.

    The scale ``2 - (w_t / S)(h_t / S)`` uses the *target's* width and height relative to the image side ``S``:
    2 for a point, 1 for a box covering the whole image, so small objects weigh up to twice as much. It depends
    on the target only, so it carries no gradient.

    Args:
        pred, target (Tensor[N, 4]): xyxy boxes.
        image_size (Tensor[N] | float): side ``S`` of the network input image, in the unit of the boxes.

    Returns:
        Tensor[N] (``eps`` unused).
    """
    p, t = xyxy_to_cxcywh(pred), xyxy_to_cxcywh(target)  # (N, 4) (cx, cy, w, h)
    size = torch.as_tensor(image_size, dtype=t.dtype, device=t.device)
    scale = 2 - (t[:, 2] / size) * (t[:, 3] / size)
    return reduce_loss(scale * (p - t).pow(2).sum(-1), reduction)


def kl_loss(
    pred: Tensor, target: Tensor, *, pred_log_var: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """KL loss of He et al. 2019, "Bounding Box Regression with Uncertainty for Accurate Object Detection".

    The prediction is a Gaussian ``N(x_e, sigma^2)`` per coordinate, the target a Dirac at ``x_g``; their KL
    divergence, up to a constant, is ``(x_g - x_e)^2 / (2 sigma^2) + ln(sigma^2) / 2``. With ``alpha = ln sigma^2``
    predicted and the squared error smoothed like smooth L1 (beta 1), per coordinate:

        ``exp(-alpha) * (|x_g - x_e| - 0.5) + alpha / 2``   if ``|x_g - x_e| > 1``
        ``exp(-alpha) / 2 * (x_g - x_e)^2 + alpha / 2``     otherwise

    Args:
        pred, target (Tensor[N, 4]): xyxy boxes (``x_e``, ``x_g``).
        pred_log_var (Tensor[N, 4]): predicted ``alpha = ln sigma^2`` per xyxy coordinate, in the boxes' unit.

    Returns:
        Tensor[N] summed over the 4 coordinates (``eps`` unused). Differentiable in ``pred`` and ``pred_log_var``.
    """
    x = (target - pred).abs()
    smooth = torch.where(x > 1, x - 0.5, 0.5 * x.pow(2))
    per_coord = torch.exp(-pred_log_var) * smooth + pred_log_var / 2
    return reduce_loss(per_coord.sum(-1), reduction)


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
    "mse": mse_loss,
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
