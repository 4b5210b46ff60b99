"""Classification losses with soft, IoU-valued targets: Varifocal and Quality Focal loss.

Both have the shape of :mod:`detector.losses.classification`, ``fn(logits, target, *, reduction="none", **params)``:

    logits (Tensor[..., C]): raw class scores (the criterion passes ``[P, C]`` or ``[B, P, C]``: every prior, since
        negatives are trained too).
    target (Tensor[..., C]): same shape, float in ``[0, 1]``: the IoU (or another quality score) of the prior's
        box with its ground truth in the ground truth's class column, 0 everywhere else and on negatives.
    reduction: ``"none"`` -> Tensor[..., C] per element; ``"mean"`` / ``"sum"`` -> scalar.

Normalisation by the number of positives is the criterion's job. Both are computed from logits with
:func:`detector.ops.bce.binary_cross_entropy_with_logits` (stable for any logit) times a modulating weight. The weight
is multiplied after the BCE rather than passed as its ``weight=`` argument, because it depends on ``sigmoid(logits)``
and gradients flow through it (as in mmdetection and ultralytics); PyTorch's ``weight=`` input does not accept a
tensor that requires grad. The base of each power is clamped to the dtype's smallest normal number, which changes no
value visibly but keeps the gradient finite (0 instead of ``inf * 0 = NaN``) for exponents below 1 where the sigmoid
saturates onto the target (``|x| > ~100`` in float32).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.losses.reduction import reduce_loss
from detector.ops.bce import binary_cross_entropy_with_logits


def varifocal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
) -> Tensor:
    """Varifocal loss (Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021, eq. 2).

    With ``p = sigmoid(x)`` and the IoU-aware target ``q``::

        VFL(p, q) = -q (q log p + (1 - q) log(1 - p))     if q > 0   (= q * BCE(x, q))
                  = -alpha p^gamma log(1 - p)              if q = 0   (= alpha p^gamma * BCE(x, 0))

    Asymmetric: only negatives are down-weighted by ``p^gamma``; positives are weighted by their own ``q``, so
    high-IoU positives dominate. ``iou_weighted=False`` drops the leading ``q`` of positives (weight 1;
    mmdetection's option of the same name; the paper's form is ``True``). A positive is ``q > 0``, as in the
    paper and mmdetection; ultralytics' ``VarifocalLoss`` takes a separate positive mask instead, which differs
    only for a positive whose target is exactly 0 (zero loss there, ``alpha p^gamma BCE`` here).

    With hard targets ``q in {0, 1}`` it is a focal loss with the focusing switched off for positives:
    ``-log p`` on positives (plain BCE) and ``alpha p^gamma (-log(1 - p))`` on negatives, i.e.
    ``torchvision.ops.sigmoid_focal_loss(x, t, alpha=-1, gamma=0)`` where ``t = 1`` and
    ``sigmoid_focal_loss(x, t, alpha=1 - alpha, gamma=gamma)`` where ``t = 0``.

    Example: logit 0 (``p = 1/2``): ``q = 0.5`` -> ``-0.5 (0.5 ln 0.5 + 0.5 ln 0.5) = 0.5 ln 2``;
    ``q = 0`` -> ``0.75 * (1/2)^2 * ln 2 = 0.1875 ln 2``. Logit ``ln 3`` (``p = 3/4``), ``q = 1`` -> ``ln(4/3)``.

    Args:
        logits (Tensor[..., C]), target (Tensor[..., C] in [0, 1]): as in the module docstring.
        alpha: weight of the negatives (``>= 0``; not the focal loss's alpha, which weights positives).
        gamma: focusing exponent on the negatives' ``p`` (``>= 0``).
        iou_weighted: weight positives by ``q`` (True, the paper) or by 1.

    Returns:
        Tensor[..., C] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    if alpha < 0 or gamma < 0:
        raise ValueError(f"varifocal_loss needs alpha >= 0 and gamma >= 0; got alpha={alpha}, gamma={gamma}")
    target = target.to(logits.dtype)
    positive = target > 0
    pos_weight = target if iou_weighted else positive.to(logits.dtype)
    focus = logits.sigmoid().clamp_min(torch.finfo(logits.dtype).tiny).pow(gamma)  # (..., C)
    weight = positive * pos_weight + (~positive) * (alpha * focus)  # (..., C)
    loss = binary_cross_entropy_with_logits(logits, target) * weight
    return reduce_loss(loss, reduction)


def quality_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    beta: float = 2.0,
) -> Tensor:
    """Quality focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020, eq. 5).

    With ``sigma = sigmoid(x)`` and the soft target ``y`` (IoU on the positive's class column, 0 elsewhere)::

        QFL(sigma, y) = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log sigma) = |y - sigma|^beta * BCE(x, y)

    Symmetric in positives and negatives: the weight vanishes where the score already equals its target (the
    global minimum is ``sigma = y``). For hard targets ``y in {0, 1}``, ``|y - sigma| = 1 - p_t`` and QFL is the
    sigmoid focal loss without alpha, ``torchvision.ops.sigmoid_focal_loss(x, y, alpha=-1, gamma=beta)``.
    mmdetection's ``quality_focal_loss`` takes ``(label, score)`` and sums over classes; this takes the dense
    ``[..., C]`` target and leaves the class dimension to the caller.

    Example: logit ``ln 3`` (``sigma = 3/4``): ``y = 0`` -> ``(3/4)^2 ln 4``; ``y = 0.25`` ->
    ``(1/2)^2 * -(0.25 ln 0.75 + 0.75 ln 0.25)``. Logit 0, ``y = 0.5`` -> 0.

    Args:
        logits (Tensor[..., C]), target (Tensor[..., C] in [0, 1]): as in the module docstring.
        beta: modulating exponent (``>= 0``; the paper's default 2; ``beta = 0`` is plain BCE).

    Returns:
        Tensor[..., C] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    if beta < 0:
        raise ValueError(f"quality_focal_loss needs beta >= 0; got beta={beta}")
    target = target.to(logits.dtype)
    weight = (target - logits.sigmoid()).abs().clamp_min(torch.finfo(logits.dtype).tiny).pow(beta)  # (..., C)
    loss = binary_cross_entropy_with_logits(logits, target) * weight
    return reduce_loss(loss, reduction)
