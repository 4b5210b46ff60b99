"""Hard-negative mining (SSD, Liu et al. 2016): keep the negatives with the highest background loss, a fixed
multiple of the positives of each image. Vectorised over the batch.

Shape letters as in :mod:`detector.structures`: ``B`` images, ``P`` priors, ``M`` positive pairs.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from detector.samplers.random import sampling_candidates, top_k_per_row
from detector.structures import Assignment


def hard_negative_mining(
    assignment: Assignment,
    prior_loss: Tensor,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 0,
) -> Assignment:
    """Per image, the ``k`` non-positive, non-ignored priors with the highest loss become the negatives.

    ``k = max(int(neg_pos_ratio * num_pos), min_negatives)`` with ``num_pos`` the image's positive priors (a
    prior in several pairs counts once), capped by the number of candidates (priors neither positive nor
    ignored, and inside ``assignment.negative`` when given). So an image without positives gets no negatives
    (as in SSD) unless ``min_negatives > 0``. Equal losses: the lower prior index comes first.

    Same selection as torchvision's ``SSD.compute_loss`` (``neg_to_pos_ratio = 3``) except in two corners:
    torchvision keeps the first ``ceil(ratio * num_pos)`` (it compares the rank with the float product), here
    ``int(...)`` (the same for integral ratios); and when an image has fewer non-positive priors than that,
    torchvision also counts positives (loss set to -inf) as negatives, here the candidates are all kept and no
    more.

    Worked example (``neg_pos_ratio = 3``, one image, ``P = 8``): positives ``{1}`` (in two pairs, one
    prior), ignored ``{6}``, ``prior_loss = [0.9, 5.0, 0.1, 0.7, 0.3, 0.8, 2.0, 0.5]``. ``k = int(3 * 1) = 3``.
    Candidates ``{0, 2, 3, 4, 5, 7}`` by decreasing loss: ``0 (0.9), 5 (0.8), 3 (0.7), 7 (0.5), ...``, so the
    negatives are ``{0, 3, 5}``; prior 1 (positive, 5.0) and prior 6 (ignored, 2.0) are never taken.

    Args:
        assignment: the assigner's result (pairs, optional ``ignore`` / ``negative`` Tensor[B, P] bool).
        prior_loss (Tensor[B, P] float): each prior's classification loss against the background class, finite
            (detached here; only its order matters).
        neg_pos_ratio: negatives per positive prior, >= 0 (SSD uses 3).
        min_negatives: least negatives per image (capped by the candidates), >= 0.

    Returns:
        A new Assignment (``dataclasses.replace``): the same pairs, ``ignore`` unchanged, ``negative``
        (Tensor[B, P] bool, on the device of ``assignment.batch_index``) the mined negatives.
    """
    if neg_pos_ratio < 0:
        raise ValueError(f"hard_negative_mining: neg_pos_ratio must be >= 0 (SSD uses 3.0), got {neg_pos_ratio}")
    if isinstance(min_negatives, bool) or not isinstance(min_negatives, int) or min_negatives < 0:
        raise ValueError(f"hard_negative_mining: min_negatives must be an integer >= 0, got {min_negatives!r}")
    if prior_loss is None or prior_loss.ndim != 2:
        got = None if prior_loss is None else tuple(prior_loss.shape)
        raise ValueError(
            f"hard_negative_mining needs prior_loss, Tensor[B, P] = each prior's background loss; got {got}"
        )
    batch_size, num_priors = prior_loss.shape
    positive, candidate = sampling_candidates(assignment, batch_size, num_priors)  # (B, P), (B, P)
    loss = prior_loss.detach().to(positive.device)  # (B, P)

    num_pos = positive.sum(1)  # (B,)
    # float64 product and floor: exactly Python's int(neg_pos_ratio * num_pos) for num_pos >= 0
    num_neg = (num_pos.to(torch.float64) * neg_pos_ratio).floor().long().clamp(min=min_negatives)  # (B,)

    negative = top_k_per_row(loss, candidate, num_neg)  # (B, P)
    return dataclasses.replace(assignment, negative=negative)


class HardNegativeSampler:
    """Callable wrapper of :func:`hard_negative_mining` with the sampler interface of :mod:`detector.samplers`.

    Args:
        neg_pos_ratio: negatives per positive prior of an image; SSD uses 3.
        min_negatives: least negatives per image (so images without objects still learn background); SSD: 0.
    """

    needs_losses = True

    def __init__(self, neg_pos_ratio: float = 3.0, min_negatives: int = 0):
        if neg_pos_ratio < 0:
            raise ValueError(f"HardNegativeSampler: neg_pos_ratio must be >= 0 (SSD uses 3.0), got {neg_pos_ratio}")
        if isinstance(min_negatives, bool) or not isinstance(min_negatives, int) or min_negatives < 0:
            raise ValueError(f"HardNegativeSampler: min_negatives must be an integer >= 0, got {min_negatives!r}")
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.min_negatives = min_negatives

    def __call__(
        self, assignment: Assignment, batch_size: int, num_priors: int, prior_loss: Tensor | None = None
    ) -> Assignment:
        """``prior_loss`` (Tensor[B, P]) is required: each prior's classification loss against background."""
        if prior_loss is None or tuple(prior_loss.shape) != (batch_size, num_priors):
            got = None if prior_loss is None else tuple(prior_loss.shape)
            raise ValueError(
                f"HardNegativeSampler needs prior_loss, Tensor[B, P] = ({batch_size}, {num_priors}) of each prior's "
                f"background loss (needs_losses is True); got {got}"
            )
        return hard_negative_mining(
            assignment, prior_loss, neg_pos_ratio=self.neg_pos_ratio, min_negatives=self.min_negatives
        )

    def __repr__(self) -> str:
        return f"HardNegativeSampler(neg_pos_ratio={self.neg_pos_ratio}, min_negatives={self.min_negatives})"
