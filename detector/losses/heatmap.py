"""Heat-map classification loss of CornerNet / CenterNet: a focal loss whose negatives near a centre are forgiven.

Same shape as :mod:`detector.losses.classification`, ``fn(logits, target, *, reduction="none", **params)``:

    logits (Tensor[...]): raw class scores (the criterion passes ``[B, P, C]``, every prior of the one level).
    target (Tensor[...]): same shape, the Gaussian heat map in ``[0, 1]``
        (:func:`detector.assigners.centernet.assign_centernet`'s ``extras["heatmap"]``), exactly 1 at object centres.
    reduction: ``"none"`` -> per element; ``"mean"`` / ``"sum"`` -> scalar.

The paper divides the sum by the number of objects ``N``; that is the criterion's job (CenterNet's code counts
``N`` as the elements with ``target == 1``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.losses.reduction import reduce_loss
from detector.ops.heatmap_focal import penalty_focal_loss


def penalty_reduced_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "none",
    alpha: float = 2.0,
    beta: float = 4.0,
    eps: float = 1e-4,
) -> Tensor:
    """Penalty-reduced pixel-wise focal loss (Zhou et al. 2019, eq. 1; Law & Deng 2018, eq. 1), per element.

    With ``p = sigmoid(x)`` and the heat-map target ``y``::

        L = -(1 - p)^alpha log(p)                      if y == 1   (a centre)
          = -(1 - y)^beta p^alpha log(1 - p)           otherwise   (0 at a centre's own cell, ~1 far away)

    A positive is ``y == 1`` exactly, as in CenterNet's code (``gt.eq(1)``). Everything is computed in log space
    from the logits (``log p = logsigmoid(x)``, ``log(1 - p) = logsigmoid(-x)``, ``p^alpha = exp(alpha log p)``),
    so no logit overflows; half-precision logits are computed (and returned) in float32, where the intermediate
    gradients of logits near the float16 limit would overflow. ``eps`` reproduces CenterNet's clamp of ``p`` to
    ``[eps, 1 - eps]`` (its ``_sigmoid``, ``1e-4``) as a clamp of the logit to ``+-log((1 - eps) / eps)``
    (``+-9.21`` at ``1e-4``): the loss of a logit beyond it is that of the bound and its gradient is 0, as in
    CenterNet; ``eps=0`` turns it off.

    Example: logit 0 (``p = 1/2``): ``y = 1`` -> ``(1/2)^2 ln 2 = 0.17329``; ``y = 0.5`` -> ``(1/2)^4 (1/2)^2
    ln 2 = 0.010830``; ``y = 0`` -> ``(1/2)^2 ln 2``.

    Args:
        logits (Tensor[...]), target (Tensor[...] in [0, 1]): as in the module docstring.
        alpha: focusing exponent (2).
        beta: exponent of the penalty reduction of negatives near a centre (4).
        eps: probability clamp in ``[0, 0.5)``; 0 for none.

    Returns:
        Tensor[...] per element (or a scalar for ``"mean"`` / ``"sum"``).
    """
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"penalty_reduced_focal_loss: eps must lie in [0, 0.5) (CenterNet: 1e-4), got {eps!r}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half logits: gradients overflow
    if eps > 0:
        bound = float(torch.logit(torch.tensor(1.0 - eps, dtype=torch.float64)))
        logits = logits.clamp(-bound, bound)
    target = target.to(logits.dtype)
    return reduce_loss(penalty_focal_loss(logits, target, alpha, beta), reduction)  # one fused node on the CPU


def centernet_l1_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7,
                      offset_weight: float = 1.0, size_weight: float = 0.1) -> Tensor:
    """CenterNet's regression at object centres: L1 on the sub-cell offset and on the size, weighted 1 and 0.1.

    Inputs are the :class:`~detector.ops.center_coder.CenterNetCoder` values ``(ox, oy, w, h)`` (offset in cells,
    size in strides), so the criterion calls it with ``loss.box_space: encoded``. CenterNet divides each L1 sum by
    the number of masked elements, two per object; per object that is the mean over the two coordinates:
    ``offset_weight * (|dox| + |doy|) / 2 + size_weight * (|dw| + |dh|) / 2``.

    Example: pred ``(0.5, 0.5, 10, 4)``, target ``(0.25, 0.75, 12, 4)``: ``(0.25 + 0.25) / 2 + 0.1 * 2 / 2 = 0.35``.

    pred, target (Tensor[N, 4]) -> Tensor[N] (``eps`` unused).
    """
    err = (pred - target).abs()  # (N, 4)
    per_box = 0.5 * (offset_weight * err[:, :2].sum(-1) + size_weight * err[:, 2:].sum(-1))
    return reduce_loss(per_box, reduction)
