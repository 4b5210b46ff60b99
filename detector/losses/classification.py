"""Classification and objectness losses on logits, one value per element.

Every function has the form ``fn(logits, target, *, reduction="none", **params)``:

    logits (Tensor[...]): raw scores (any shape; the criterion passes ``[M, C]`` class logits of
        positive pairs, or ``[B, P_l]`` objectness logits of one level).
    target (Tensor[...]): same shape, float in ``[0, 1]`` (one-hot classes, or an IoU-valued
        objectness target).
    reduction: ``"none"`` returns the per-element loss (same shape as ``logits``; ``ce`` drops the
        last dimension), ``"mean"`` / ``"sum"`` reduce it to a scalar.

Normalisation by the number of positives (``avg_factor``) is the criterion's job, so the criterion
always calls these with ``reduction="none"``.

``CLS`` maps config names (``loss.cls: focal``) to the functions, including the ranking losses of
:mod:`detector.losses.ranking` (``dr``, ``ap``), which are not per-element: they rank all the
elements they are given and return a scalar (see that module). ``ghm`` (GHM-C) keeps a gradient-density
histogram across calls: it is a class of :mod:`detector.losses.stateful`, called like the functions.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.losses.heatmap import penalty_reduced_focal_loss
from detector.losses.ranking import ap_loss, dr_loss
from detector.losses.reduction import reduce_loss
from detector.losses.soft_targets import quality_focal_loss, varifocal_loss
from detector.losses.stateful import GHMCLoss
from detector.ops.bce import binary_cross_entropy_with_logits
from detector.ops.focal import sigmoid_focal_loss


def bce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    pos_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Binary cross-entropy on logits (YOLOv5's ``BCEWithLogitsLoss``).

    Args:
        logits (Tensor[...]), target (Tensor[...] in [0, 1]): as in the module docstring.
        pos_weight: weight of the positive part ``-t * log(sigmoid(x))`` (YOLOv5's ``cls_pw`` /
            ``obj_pw``).
        label_smoothing: ``eps``; the target becomes ``t * (1 - eps) + 0.5 * eps``, so a one-hot
            positive is ``1 - eps / 2`` and a negative ``eps / 2`` (YOLOv5's ``smooth_BCE``).

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    pw = None if pos_weight == 1.0 else torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    loss = binary_cross_entropy_with_logits(logits, target, pw)
    return reduce_loss(loss, reduction)


def ce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy over the last dimension, with one-hot or soft targets, or class indices.

    For heads with a background class (SSD, Faster R-CNN): a negative is a row whose target puts
    its mass on the background column. A row of zeros (no class) gives zero loss.

    Args:
        logits (Tensor[..., C]), target (Tensor[..., C] in [0, 1], rows summing to 1 or 0; or Tensor[...] of
            integer class indices in ``[0, C)``, the same as their one-hot rows without building them: what the
            criterion passes for a softmax head's every prior).
        label_smoothing: ``eps``; the target row becomes ``t * (1 - eps) + eps / C * sum(t)``
            (``torch.nn.functional.cross_entropy``'s convention).

    Returns:
        Tensor[...] (the class dimension is summed out), or a scalar for ``"mean"`` / ``"sum"``.
    """
    if logits.dim() == 0 or logits.shape[-1] < 2:
        raise ValueError(f"ce needs a class dimension of size >= 2 as the last dim, got logits {tuple(logits.shape)}")
    if not target.is_floating_point():  # class indices; the class dimension moved to dim 1, where cross_entropy
        # wants it: a free view for the head's (B, C, P) buffers (detector.models.heads.yolo._SplitChannels)
        moved = logits.movedim(-1, 1) if logits.dim() > 2 else logits
        loss = F.cross_entropy(moved, target, reduction="none", label_smoothing=label_smoothing)
        return reduce_loss(loss, reduction)
    if label_smoothing:
        num_classes = logits.shape[-1]
        target = target * (1.0 - label_smoothing) + target.sum(-1, keepdim=True) * (label_smoothing / num_classes)
    loss = -(target * F.log_softmax(logits, dim=-1)).sum(-1)  # (...)
    return reduce_loss(loss, reduction)


def balanced_bce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    alpha: float = 0.75,
) -> Tensor:
    """Alpha-balanced binary cross-entropy (Lin et al. 2017, Sec. 3.1): ``alpha_t * BCE``.

    ``alpha_t = alpha * t + (1 - alpha) * (1 - t)``. The default 0.75 is the best alpha for plain
    (gamma 0) cross-entropy in the focal-loss paper's Table 1a.

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    alpha_t = alpha * target + (1.0 - alpha) * (1.0 - target)
    loss = alpha_t * binary_cross_entropy_with_logits(logits, target)
    return reduce_loss(loss, reduction)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), the same function as ``torchvision.ops.sigmoid_focal_loss``.

    ``p_t = p * t + (1 - p) * (1 - t)``, ``loss = alpha_t * (1 - p_t) ** gamma * BCE``, with
    ``alpha_t = alpha * t + (1 - alpha) * (1 - t)``; a negative ``alpha`` switches the alpha weighting
    off (YOLOv5's ``FocalLoss`` wrapper computes the same values for binary targets).

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    return reduce_loss(sigmoid_focal_loss(logits, target, alpha, gamma), reduction)  # one fused node on the CPU


def mse_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    neg_weight: float = 1.0,
) -> Tensor:
    """Squared error on sigmoid probabilities, YOLOv1/v2's confidence and class loss.

    ``loss = w * (sigmoid(x) - t) ** 2`` with ``w = neg_weight`` where ``t == 0`` and 1 elsewhere
    (YOLOv1's ``lambda_noobj = 0.5`` for cells without an object is ``neg_weight: 0.5``).

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    loss = (logits.sigmoid() - target) ** 2
    if neg_weight != 1.0:
        loss = torch.where(target == 0, neg_weight * loss, loss)
    return reduce_loss(loss, reduction)


def poly1_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    epsilon: float = 1.0,
) -> Tensor:
    """Poly-1 on binary cross-entropy (Leng et al., "PolyLoss: A Polynomial Expansion Perspective of
    Classification Loss Functions", ICLR 2022): ``BCE + epsilon * (1 - p_t)``.

    ``-log p_t = sum_j (1 - p_t)^j / j``; Poly-1 adds ``epsilon`` to the first coefficient, which adds the same
    ``-epsilon`` to every element's gradient in ``p_t``. ``p_t = p t + (1 - p)(1 - t)`` (soft targets allowed);
    the paper's default ``epsilon = 1``; ``epsilon = 0`` is ``bce``.

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    p = logits.sigmoid()
    p_t = p * target + (1.0 - p) * (1.0 - target)
    loss = binary_cross_entropy_with_logits(logits, target) + epsilon * (1.0 - p_t)
    return reduce_loss(loss, reduction)


def poly1_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    epsilon: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Poly-1 on the sigmoid focal loss (PolyLoss, ICLR 2022): ``FL + epsilon * (1 - p_t)^(gamma + 1)``.

    The focal loss is :func:`focal_loss` (with its ``alpha_t``); the added term, the first one of the focal loss's
    polynomial expansion, carries no ``alpha_t``, as in the paper's code. ``epsilon = 0`` is ``focal``.

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    p = logits.sigmoid()
    p_t = p * target + (1.0 - p) * (1.0 - target)
    loss = focal_loss(logits, target, alpha=alpha, gamma=gamma) + epsilon * (1.0 - p_t) ** (gamma + 1.0)
    return reduce_loss(loss, reduction)


# Config name -> loss function. Per-element losses first, then the ranking losses (scalar result).
CLS: dict[str, Callable[..., Tensor]] = {
    "bce": bce_loss,
    "ce": ce_loss,
    "balanced_bce": balanced_bce_loss,
    "focal": focal_loss,
    "mse": mse_loss,
    "vfl": varifocal_loss,
    "qfl": quality_focal_loss,
    "poly1": poly1_loss,
    "poly1_focal": poly1_focal_loss,
    "ghm": GHMCLoss,  # stateful.py: a class; LossSpec makes one instance (one histogram) per spec
    "penalty_focal": penalty_reduced_focal_loss,  # heatmap.py: CenterNet's heat-map focal loss
    "dr": dr_loss,
    "ap": ap_loss,
}
