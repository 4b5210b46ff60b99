"""The one ``reduction`` helper every loss function shares."""
from __future__ import annotations

from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """loss (Tensor[...]) -> itself (``"none"``), its sum (``"sum"``) or its mean (``"mean"``; 0 when empty).

    The mean of an empty tensor is 0 rather than NaN, so a batch without positives adds nothing.
    """
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else loss.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
