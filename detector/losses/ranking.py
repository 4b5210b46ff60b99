"""Ranking losses for classification: DR loss (Qian et al., CVPR 2020) and AP-loss (Chen et al., CVPR 2019).

Unlike the per-element losses of :mod:`detector.losses.classification`, these rank every element they
are given against every other, so they return one scalar for the whole input, whatever ``reduction``
says (the argument is accepted for the common interface). Both follow their authors' released code
in ranking the whole minibatch at once (all images, all priors, all classes: one-vs-all binary
problems merged into one ranking); the caller selects which elements take part (drop ignored
priors before calling).

    logits (Tensor[...]): raw scores of the elements to rank, any shape.
    target (Tensor[...]): same shape, float in ``[0, 1]``; elements with ``target > 0`` are
        positives, the rest negatives (the values of soft targets are otherwise not used).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.losses.reduction import REDUCTIONS



def _check_inputs(logits: Tensor, target: Tensor, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")


# ----------------------------------------------------------------------------------------------
# DR loss
# ----------------------------------------------------------------------------------------------
def dr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    reduction: str = "mean",
    margin: float = 0.5,
    pos_lambda: float = 1.0,
    neg_lambda: float = 0.1 / math.log(3.5),
    steepness: float = 6.0,
    tau: float = 4.0,
) -> Tensor:
    """Distributional Ranking loss (Qian et al., "DR Loss: Improving Object Detection by Distributional
    Ranking", CVPR 2020).

    On probabilities ``p = sigmoid(logits)``, DR ranks two *distributions* instead of every pair:

    * the negatives' expected score under the distribution ``q-`` that maximises
      ``sum_j q_j p_j - neg_lambda * KL(q || uniform)``, whose closed form is
      ``q- = softmax(p_neg / neg_lambda)`` (a soft maximum: it stresses the hardest negatives);
    * the positives' expected score under ``q+ = softmax(-p_pos / pos_lambda)``, the minimiser of
      ``sum_i q_i p_i + pos_lambda * KL(q || uniform)`` (a soft minimum: the hardest positives);

    and applies the smoothed logistic loss with ``L = steepness`` to the gap plus ``margin``::

        loss = tau / L * log(1 + exp(L * (P_neg - P_pos + margin)))

    The defaults are the paper's (margin 0.5, lambda+ 1, lambda- 0.1 / ln 3.5, L 6, tau 4). The loss
    never reaches zero: its minimum (positives at 1, negatives at 0) is
    ``tau / L * log(1 + exp(L * (margin - 1)))``. Without positives ``P_pos`` is taken as 0 and the
    loss only pushes the negatives down; without negatives ``P_neg`` is 0.

    Returns:
        Tensor[] scalar (see the module docstring).
    """
    _check_inputs(logits, target, reduction)
    prob = logits.sigmoid().reshape(-1)  # (E,) every element
    pos = target.reshape(-1) > 0  # (E,)
    pos_prob, neg_prob = prob[pos], prob[~pos]
    zero = prob.sum() * 0  # keeps the graph (and device, dtype) when a set is empty
    neg_dist = (F.softmax(neg_prob / neg_lambda, dim=0) * neg_prob).sum() if neg_prob.numel() else zero
    pos_dist = (F.softmax(-pos_prob / pos_lambda, dim=0) * pos_prob).sum() if pos_prob.numel() else zero
    return tau / steepness * F.softplus(steepness * (neg_dist - pos_dist + margin))


# ----------------------------------------------------------------------------------------------
# AP-loss
# ----------------------------------------------------------------------------------------------
def _step_sum(sorted_values: Tensor, queries: Tensor, delta: float) -> Tensor:
    """``sum_k H(v_k - q)`` for every query ``q``, with the piecewise step function ``H`` of AP-loss.

    ``H(x) = 0`` for ``x < -delta``, ``x / (2 delta) + 0.5`` for ``|x| <= delta``, 1 for ``x > delta``.

    Args:
        sorted_values (Tensor[K]): ascending, float64.
        queries (Tensor[Q]): float64.

    Returns:
        Tensor[Q] float64; O((K + Q) log K) via binary search and prefix sums instead of a K x Q matrix.
    """
    csum = F.pad(sorted_values.cumsum(0), (1, 0))  # (K + 1,) csum[k] = sum of the first k values
    lo = torch.searchsorted(sorted_values, queries - delta, right=True)  # (Q,) values with H = 0
    hi = torch.searchsorted(sorted_values, queries + delta, right=False)  # (Q,) values below H = 1
    count = (hi - lo).to(sorted_values.dtype)
    window = csum[hi] - csum[lo]
    return (sorted_values.numel() - hi) + (window - count * queries) / (2 * delta) + 0.5 * count


def _weighted_step_sum(sorted_values: Tensor, weights: Tensor, queries: Tensor, delta: float) -> Tensor:
    """``sum_k w_k H(q - v_k)`` for every query ``q`` (``H`` as in :func:`_step_sum`).

    Args:
        sorted_values (Tensor[K]): ascending, float64; weights (Tensor[K]) aligned with them.
        queries (Tensor[Q]): float64.

    Returns:
        Tensor[Q] float64.
    """
    wsum = F.pad(weights.cumsum(0), (1, 0))  # (K + 1,)
    wvsum = F.pad((weights * sorted_values).cumsum(0), (1, 0))  # (K + 1,)
    lo = torch.searchsorted(sorted_values, queries - delta, right=True)  # (Q,) v <= q - delta: H = 1
    hi = torch.searchsorted(sorted_values, queries + delta, right=False)  # (Q,) v < q + delta: H > 0
    w_window = wsum[hi] - wsum[lo]  # weights of the values in the linear part
    wv_window = wvsum[hi] - wvsum[lo]
    return wsum[lo] + ((queries + delta) * w_window - wv_window) / (2 * delta)


def ap_loss_and_update(scores: Tensor, positive: Tensor, delta: float = 1.0) -> tuple[Tensor, Tensor]:
    """AP-loss value and its error-driven update (Chen et al. 2019, Algorithm 1 with interpolated AP).

    With ``x_ij = s_j - s_i`` for a positive ``i`` and any ``j``, and the piecewise step ``H`` (see
    :func:`_step_sum`), positive ``i`` has ``rank+(i) = 1 + sum_{k in P, k != i} H(x_ik)``,
    ``rank(i) = rank+(i) + sum_{j in N} H(x_ij)`` and precision ``rank+(i) / rank(i)``. Interpolated
    AP replaces each precision by the largest precision among positives scored at most as high
    (higher recall); the loss is ``1 - mean(interpolated precision)``.

    The error-driven update treats each primary term ``L_ij = H(x_ij) / rank(i)`` (``i in P``,
    ``j in N``) as wrong by ``L_ij - 0``; with interpolation, ``L_ij`` is scaled by
    ``(1 - interp_prec_i) / (1 - prec_i)``. The update of a score is then
    ``-sum_j L_ij / |P|`` for a positive (that is ``-(1 - interp_prec_i) / |P|``) and
    ``+sum_i L_ij / |P|`` for a negative. Negatives scored below ``min positive - delta`` have
    ``H = 0`` against every positive and are skipped, as in the paper.

    Args:
        scores (Tensor[E]): logits, any float dtype (computed in float64).
        positive (Tensor[E]): bool, the positives; every other element is a negative.
        delta: half-width of the linear part of ``H`` (the paper uses 1).

    Returns:
        (loss (Tensor[] float64), update (Tensor[E] float64)); both 0 when there is no positive.
    """
    update = torch.zeros_like(scores, dtype=torch.float64)
    num_pos = int(positive.sum())
    if num_pos == 0:
        return update.new_zeros(()), update
    s = scores.to(torch.float64)
    fg, order = s[positive].sort()  # (|P|,) ascending, so running maxima run from high recall down
    relevant_neg = torch.nonzero(~positive & (s >= fg[0] - delta))[:, 0]  # (N',) negatives any positive sees
    bg_sorted, bg_order = s[relevant_neg].sort()  # (N',)
    rank_pos = _step_sum(fg, fg, delta) + 0.5  # (|P|,) H(0) = 0.5 counted for k = i, so 1 + sum over k != i
    rank = rank_pos + _step_sum(bg_sorted, fg, delta)  # (|P|,)
    prec = rank_pos / rank
    interp = prec.cummax(0).values  # (|P|,) max precision over positives scored no higher
    scale = torch.where(prec >= interp, torch.ones_like(prec), (1 - interp) / (1 - prec))
    neg_update = _weighted_step_sum(fg, scale / rank, bg_sorted, delta)  # (N',) in bg_sorted order
    pos_update = torch.empty_like(fg)
    pos_update[order] = -(1 - interp)
    update[positive] = pos_update
    update[relevant_neg[bg_order]] = neg_update
    return 1 - interp.mean(), update / num_pos


class _APLossFunction(torch.autograd.Function):
    """Autograd wrapper: forward returns the AP-loss, backward the error-driven update (not a derivative)."""

    @staticmethod
    def forward(ctx, logits: Tensor, positive: Tensor, delta: float) -> Tensor:  # type: ignore[override]
        loss, update = ap_loss_and_update(logits.detach().reshape(-1), positive.reshape(-1), delta)
        ctx.save_for_backward(update.to(logits.dtype).reshape(logits.shape))
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (update,) = ctx.saved_tensors
        return update * grad_output, None, None


def ap_loss(logits: Tensor, target: Tensor, *, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """AP-loss (Chen et al., "Towards Accurate One-Stage Object Detection with AP-Loss", CVPR 2019).

    ``loss = 1 - interpolated AP`` of ranking all elements by their logits, positives being
    ``target > 0``; its "gradient" is the paper's error-driven update, computed in the forward pass
    by :func:`ap_loss_and_update` (a custom :class:`torch.autograd.Function`), so ``loss.backward()``
    applies it. ``delta`` is the interpolation half-width of the piecewise step function (paper: 1).
    Zero, with a zero update, when every positive outranks every negative by more than ``delta``,
    and when there is no positive.

    Returns:
        Tensor[] scalar (see the module docstring).
    """
    _check_inputs(logits, target, reduction)
    if delta <= 0:
        raise ValueError(f"ap_loss: delta must be > 0, got {delta}")
    return _APLossFunction.apply(logits, target.detach() > 0, float(delta))
