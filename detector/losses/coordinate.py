"""Coordinate regression losses on matched pairs: the first part of ``BOX`` (:mod:`detector.losses.box`, whose
docstring gives the contract every box loss follows).

Per box, the sum of four per-coordinate terms: on ``(x1, y1, x2, y2)`` for ``mse``, ``l1``, ``smooth_l1``,
``huber``, ``balanced_l1``, ``focal_l1`` and ``kl`` (``rmse`` is the root of the ``mse`` sum), on
``(cx, cy, w, h)`` for ``yolov1`` and ``yolov3_mse``. pred, target (Tensor[N, 4]) in grid-cell units.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from detector.losses.reduction import reduce_loss
from detector.ops.boxes import xyxy_to_cxcywh


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
