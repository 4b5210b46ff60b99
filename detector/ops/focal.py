"""The sigmoid focal loss per element, as one autograd node that keeps nothing but its inputs (CPU).

Written with autograd's elementwise operations, the focal loss ``alpha_t (1 - p_t)^gamma BCE(x, t)`` is about a dozen
operations forward, each of which saves a full-size tensor, and twice that backward: on a dense head that is a dozen
passes over ``B x P x C`` elements each way (RetinaNet at 640 px: 97 M elements at batch 16, where one pass costs
20-60 ms on this project's CPUs; profiled: 5.7 s per step, two thirds of it in ``mul``, ``sub`` and ``add``).
Here the forward is a handful of in-place passes and the backward recomputes what it needs from the saved logits
and targets, with the gradient written out in closed form. With ``p = sigmoid(x)``, ``m = 1 - p_t = p (1 - 2t) + t``
and ``ce = BCE(x, t)``::

    FL = a_t m^gamma ce,                 a_t = alpha t + (1 - alpha)(1 - t)   (1 if alpha < 0)
    dFL/dx = a_t (gamma m^(gamma - 1) (1 - 2t) p (1 - p) ce + m^gamma (p - t))

(``dm/dx = (1 - 2t) p (1 - p)``, ``dce/dx = p - t``). Soft targets are allowed, as in ``torchvision.ops
.sigmoid_focal_loss``. Other devices and dtypes, and targets that require a gradient, use the autograd form.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.bce import binary_cross_entropy_with_logits, fused_on_cpu


def _modulator(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``p = sigmoid(x)``, ``w = 1 - 2t`` and ``m = 1 - p_t = p w + t`` (Tensor[...] each)."""
    p = torch.sigmoid(logits)
    w = torch.rsub(target, 1.0, alpha=2.0)  # 1 - 2t
    return p, w, torch.addcmul(target, p, w)


def _alpha_t(target: Tensor, alpha: float) -> Tensor:
    return target.mul(2.0 * alpha - 1.0).add_(1.0 - alpha)  # alpha t + (1 - alpha)(1 - t)


class _SigmoidFocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
        ctx.save_for_backward(logits, target)
        ctx.alpha, ctx.gamma = alpha, gamma
        with torch.no_grad():
            loss = binary_cross_entropy_with_logits(logits, target)  # its temporaries are gone before m is made
            loss.mul_(_modulator(logits, target)[2].pow_(gamma))
            return loss.mul_(_alpha_t(target, alpha)) if alpha >= 0 else loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, target = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        # at most five full-size tensors alive at once (RetinaNet at batch 64: 387 M elements, 1.5 GB each)
        first = binary_cross_entropy_with_logits(logits, target) if gamma != 0 else None  # ce
        p, w, m = _modulator(logits, target)
        if first is None:
            d = p.sub_(target)  # plain BCE
        else:
            # gamma m^(gamma - 1) w p (1 - p) ce: the base is kept >= the smallest normal float, so gamma < 1 at
            # m == 0 (a saturated p equal to its target, where p (1 - p) == 0) gives 0, not inf * 0
            first.mul_(w).mul_(gamma)
            del w
            first.mul_(m.clamp_min(torch.finfo(m.dtype).tiny).pow_(gamma - 1.0)).mul_(p)
            first.addcmul_(first, p, value=-1.0)  # x (1 - p)
            d = m.pow_(gamma).mul_(p.sub_(target)).add_(first)
        if alpha >= 0:
            d.mul_(_alpha_t(target, alpha))
        return d.mul_(grad), None, None, None


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Per-element sigmoid focal loss (Lin et al. 2017), ``torchvision.ops.sigmoid_focal_loss(..., "none")``'s values.

    Args:
        logits (Tensor[...]), target (Tensor[...], same shape, in [0, 1]).
        alpha: weight of the positives (``alpha_t``); negative: no weighting.
        gamma: focusing exponent (``>= 0``).

    Returns:
        Tensor[...]: the loss per element.

    >>> x, t = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])  # p = 1/2: 1/4 log 2, times 0.25 and 0.75
    >>> sigmoid_focal_loss(x, t).tolist()
    [0.043321698904037476, 0.12996509671211243]
    """
    if fused_on_cpu(logits, target):
        return _SigmoidFocal.apply(logits, target, float(alpha), float(gamma))
    p = logits.sigmoid()
    p_t = p * target + (1.0 - p) * (1.0 - target)
    loss = binary_cross_entropy_with_logits(logits, target) * (1.0 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1.0 - alpha) * (1.0 - target)) * loss
    return loss
