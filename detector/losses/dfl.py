"""Distribution Focal Loss (DFL) of Generalized Focal Loss, the box-distribution term of GFL and YOLOv8.

Letters: ``M`` positive (prior, ground truth) pairs, ``K`` bins per side (YOLOv8's ``reg_max = 16``).

A distribution head predicts, for each side ``(l, t, r, b)`` of a box, logits over the distances ``0, 1, ..., K - 1``
(in stride units); :func:`detector.ops.point_coders.dfl_expectation` decodes the expectation, and
:class:`detector.ops.point_coders.DistributionCoder` encodes the continuous target distances this loss takes. The loss
is used on positive pairs only, next to an IoU box loss (YOLOv8: ``box: ciou`` weight 7.5, ``dfl`` weight 1.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.losses.reduction import reduce_loss

# Upper clamp of a target distance is ``K - 1 - TARGET_MARGIN``, so the right bin ``floor(y) + 1`` exists
# (the same margin as ultralytics' ``DFLoss`` and ``DistributionCoder.max_distance``).
TARGET_MARGIN = 0.01


def distribution_focal_loss(logits: Tensor, target: Tensor, *, reduction: str = "none") -> Tensor:
    """Distribution focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020, eq. 6), mean over the 4 sides.

    Per side, with ``y`` the target distance, ``y_l = floor(y)``, ``y_r = y_l + 1`` and ``S = softmax(logits)``::

        DFL(S, y) = -((y_r - y) log S_{y_l} + (y - y_l) log S_{y_r})
                  = (y_r - y) CE(logits, y_l) + (y - y_l) CE(logits, y_r)

    i.e. the cross-entropy against the "two-hot" distribution ``t`` with mass ``y_r - y`` on bin ``y_l`` and
    ``y - y_l`` on bin ``y_r``, whose expectation is ``y``. It is minimal at ``S = t`` (gradient
    ``(S - t) / 4`` per side is zero there), with value the entropy ``H(t) = -(w_l ln w_l + w_r ln w_r)``;
    an integer target puts all the mass on one bin (``H = 0``, unreachable by finite logits).

    The result is the **mean** over the 4 sides, one value per pair: ultralytics' ``DFLoss`` takes
    ``.mean(-1)`` over the sides and mmdetection's GFL head calls its per-side DFL with ``avg_factor=4``; both
    then weight each pair and divide by the sum of the weights (the criterion's ``avg_factor``). With the mean,
    YOLOv8's ``dfl`` gain (1.5) means what it does there.

    ``target`` is clamped to ``[0, K - 1 - 0.01]`` (ultralytics' ``DFLoss`` does the same; ``DistributionCoder``
    already encodes within that range), so ``y_r <= K - 1`` always.

    Example (``K = 4``, one side): target 1.25 -> weight 0.75 on bin 1 and 0.25 on bin 2; with uniform logits
    every ``CE = ln 4``, so the side's loss is ``ln 4``. Target 3 (= ``K - 1``) is clamped to 2.99: weight 0.01
    on bin 2 and 0.99 on bin 3.

    Args:
        logits (Tensor[M, 4 * K] or Tensor[M, 4, K]): raw per-side logits, side-major (``logits[:, s * K + k]``
            is bin ``k`` of side ``s``, the layout of :func:`detector.ops.point_coders.dfl_expectation`), ``K >= 2``.
        target (Tensor[M, 4]): continuous ``(l, t, r, b)`` distances in bin units, nominally in ``[0, K - 1)``.
        reduction: ``"none"`` -> Tensor[M]; ``"mean"`` / ``"sum"`` over pairs -> scalar (mean of none is 0).

    Returns:
        Tensor[M] per pair (mean over sides), or a scalar for ``"mean"`` / ``"sum"``.
    """
    if logits.dim() == 2 and logits.shape[1] % 4 == 0:
        logits = logits.unflatten(1, (4, logits.shape[1] // 4))  # (M, 4, K)
    if logits.dim() != 3 or logits.shape[1] != 4 or logits.shape[2] < 2:
        raise ValueError(
            "distribution_focal_loss: logits must be Tensor[M, 4 * K] or Tensor[M, 4, K] with K >= 2 bins, "
            f"got {tuple(logits.shape)}"
        )
    bins = logits.shape[2]
    if target.shape != (logits.shape[0], 4):
        raise ValueError(
            f"distribution_focal_loss: target must be Tensor[M, 4] = [{logits.shape[0]}, 4], got {tuple(target.shape)}"
        )
    y = target.to(logits.dtype).clamp(0.0, bins - 1 - TARGET_MARGIN)  # (M, 4)
    left = y.floor()  # (M, 4)
    w_left, w_right = left + 1 - y, y - left  # (M, 4)
    log_prob = F.log_softmax(logits, dim=-1)  # (M, 4, K)
    idx = left.long().unsqueeze(-1)  # (M, 4, 1)
    log_p = log_prob.gather(-1, torch.cat([idx, idx + 1], dim=-1))  # (M, 4, 2): bins y_l, y_r
    per_side = -(w_left * log_p[..., 0] + w_right * log_p[..., 1])  # (M, 4)
    return reduce_loss(per_side.mean(-1), reduction)
