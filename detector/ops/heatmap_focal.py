"""CenterNet's penalty-reduced focal loss per element, as one autograd node on the CPU (the pattern of
:mod:`detector.ops.focal`): a few in-place passes forward, the gradient recomputed in closed form from the saved
logits and heat map. Over CenterNet's stride-4 map (160 x 160 x 80 per image at 640 px, 131 M elements at batch 64)
the autograd form's dozen saved full-size intermediates made CenterNet's assignment + loss 10.1 s at batch 64 on this
project's CPUs (one thread); with this node 6.1 s (``benchmarks/bench_assign.py``).

With ``p = sigmoid(x)``, ``q = 1 - p``, ``log p = -(s + max(-x, 0))``, ``log q = -(s + max(x, 0))``, ``s =
log(1 + exp(-|x|))``::

    L = -q^a log p                       (y == 1)     dL/dx = a p q^a log p - q^(a + 1)
    L = -(1 - y)^b p^a log q             (else)       dL/dx = -(1 - y)^b (a q p^a log q - p^(a + 1))

(``d log p / dx = q``, ``d log q / dx = -p``, ``dq/dx = -p q``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.bce import fused_on_cpu, log1p_exp_neg_abs, log_sigmoid


def _log_q(x: Tensor) -> Tensor:
    """``log q = log(1 - sigmoid(x)) = -(log(1 + exp(-|x|)) + max(x, 0))``, Tensor[...]."""
    return log1p_exp_neg_abs(x).add_(x.clamp(min=0.0)).neg_()


def _centre_loss(x: Tensor, a: float) -> Tensor:
    return -torch.sigmoid(-x).pow(a) * log_sigmoid(x)  # -q^a log p


def _centre_grad(x: Tensor, a: float) -> Tensor:
    p, q = torch.sigmoid(x), torch.sigmoid(-x)
    return a * p * q.pow(a) * log_sigmoid(x) - q.pow(a + 1.0)  # a p q^a log p - q^(a + 1)


class _PenaltyFocal(torch.autograd.Function):
    """Every element as a negative (the heat map's ``(1 - y)^b`` is 0 at the centres), then the few centres
    (``y == 1``) overwritten with their own term: no second full-size pass for the positive branch."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, alpha: float, beta: float) -> Tensor:
        centres = (target == 1).nonzero(as_tuple=True)  # a few hundred per image
        ctx.save_for_backward(logits, target, *centres)
        ctx.alpha, ctx.beta = alpha, beta
        with torch.no_grad():
            loss = torch.sigmoid(logits).pow_(alpha).mul_(_log_q(logits))  # p^a log q
            loss.mul_(torch.rsub(target, 1.0).pow_(beta)).neg_()
            loss[centres] = _centre_loss(logits[centres], alpha)
            return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, target, *centres = ctx.saved_tensors
        a, b = ctx.alpha, ctx.beta
        p = torch.sigmoid(logits)
        p_a = p.pow(a)
        d = _log_q(logits).mul_(p_a).mul_(a).mul_(torch.rsub(p, 1.0))  # a q p^a log q
        d.sub_(p_a.mul_(p))  # - p^(a + 1)
        del p, p_a
        d.mul_(torch.rsub(target, 1.0).pow_(b)).neg_()
        d[tuple(centres)] = _centre_grad(logits[tuple(centres)], a)
        return d.mul_(grad), None, None, None


def penalty_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """Per-element penalty-reduced focal loss (no clamp; the caller clamps the logits), Tensor[...] -> Tensor[...].

    >>> penalty_focal_loss(torch.zeros(3), torch.tensor([1.0, 0.5, 0.0])).tolist()  # (1/2)^2 ln 2, (1/2)^6 ln 2, ...
    [0.1732867956161499, 0.010830424726009369, 0.1732867956161499]
    """
    if fused_on_cpu(logits, target):
        return _PenaltyFocal.apply(logits, target, float(alpha), float(beta))
    log_p, log_not_p = log_sigmoid(logits), log_sigmoid(-logits)
    pos_loss = -torch.exp(alpha * log_not_p) * log_p
    neg_loss = -torch.pow(1.0 - target, beta) * torch.exp(alpha * log_p) * log_not_p
    return torch.where(target == 1, pos_loss, neg_loss)
