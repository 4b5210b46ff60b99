"""Random balanced sampling of priors (Faster R-CNN's RPN; detectron2 ``subsample_labels``, torchvision
``BalancedPositiveNegativeSampler``), vectorised over the batch.

Shape letters as in :mod:`detector.structures`: ``B`` images, ``P`` priors, ``M`` positive pairs.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from detector.structures import Assignment


def sampling_candidates(assignment: Assignment, batch_size: int, num_priors: int) -> tuple[Tensor, Tensor]:
    """The positive priors and the priors a sampler may draw negatives from.

    Args:
        assignment: the assigner's result; ``ignore`` and ``negative`` (Tensor[B, P] bool) are optional.
        batch_size: B.
        num_priors: P.

    Returns:
        positive (Tensor[B, P] bool): priors in at least one pair.
        candidate (Tensor[B, P] bool): ``~positive & ~ignore``, further narrowed to ``assignment.negative``
            when the assigner already chose its negatives. On the device of ``assignment.batch_index``.

    Raises:
        ValueError: ``ignore`` or ``negative`` is not of shape ``(batch_size, num_priors)``.
    """
    for name in ("ignore", "negative"):
        mask = getattr(assignment, name)
        if mask is not None and tuple(mask.shape) != (batch_size, num_priors):
            raise ValueError(
                f"sampler: assignment.{name} must be Tensor[B, P] = ({batch_size}, {num_priors}), "
                f"got shape {tuple(mask.shape)}"
            )
    device = assignment.batch_index.device
    positive = assignment.positive_mask(batch_size, num_priors)  # (B, P)
    candidate = ~positive
    if assignment.ignore is not None:
        candidate &= ~assignment.ignore.to(device=device, dtype=torch.bool)
    if assignment.negative is not None:
        candidate &= assignment.negative.to(device=device, dtype=torch.bool)
    return positive, candidate


def top_k_per_row(score: Tensor, mask: Tensor, k: Tensor) -> Tensor:
    """Per row, the ``k[b]`` entries of ``mask`` with the highest ``score`` (all of them when there are fewer).

    Equal scores: the lower prior index comes first, so exactly ``min(k[b], mask[b].sum())`` entries are chosen.
    Cost: one ``topk`` of ``max(k)`` per row and a few elementwise passes, no full sort.

    Args:
        score (Tensor[B, P] float or integer): finite (no NaN) ranking score.
        mask (Tensor[B, P] bool): the entries that may be chosen.
        k (Tensor[B] long): how many to choose per row, >= 0.

    Returns:
        Tensor[B, P] bool, in the input order.

    Example: ``score = [[3, 5, 5, 1, 5]]``, ``mask`` all but entry 1, ``k = [2]``: the highest masked score is
    5 (entries 2 and 4 tie), so ``[[False, False, True, False, True]]``; with ``k = [1]`` only entry 2.
    """
    k = torch.minimum(k, mask.sum(1))  # (B,)
    k_max = int(k.max()) if k.numel() else 0
    if k_max == 0:
        return torch.zeros_like(mask)
    lowest = torch.finfo(score.dtype).min if score.is_floating_point() else torch.iinfo(score.dtype).min
    top = score.masked_fill(~mask, lowest).topk(k_max, dim=1).values  # (B, k_max), decreasing
    kth = top.gather(1, (k - 1).clamp(min=0)[:, None])  # (B, 1): the k-th highest masked score of each row
    above = mask & (score > kth)  # (B, P): fewer than k of them
    tied = mask & (score == kth)  # (B, P)
    room = k[:, None] - above.sum(1, keepdim=True)  # (B, 1): how many of the tied entries fit
    return (above | (tied & (tied.cumsum(1) <= room))) & (k[:, None] > 0)


def _subsample_pairs(assignment: Assignment, keep: Tensor) -> dict[str, object]:
    """The per-pair fields of ``assignment`` restricted to the pairs where ``keep`` (Tensor[M] bool) is True.

    Per-pair fields: ``batch_index``, ``prior_index``, ``gt_index``, ``weight``, ``score`` and every
    ``extras`` tensor whose leading dimension is ``M`` (others are kept as they are).
    """
    num_pairs = assignment.num_pos
    fields: dict[str, object] = {
        "batch_index": assignment.batch_index[keep],
        "prior_index": assignment.prior_index[keep],
        "gt_index": assignment.gt_index[keep],
        "weight": None if assignment.weight is None else assignment.weight[keep],
        "score": None if assignment.score is None else assignment.score[keep],
    }
    fields["extras"] = {
        name: value[keep] if value.ndim >= 1 and value.shape[0] == num_pairs else value
        for name, value in assignment.extras.items()
    }
    return fields


def balanced_random_sampling(
    assignment: Assignment,
    batch_size: int,
    num_priors: int,
    num: int = 256,
    pos_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> Assignment:
    """Keep at most ``int(num * pos_fraction)`` random positive priors per image, and fill up to ``num`` with
    random negatives.

    Per image ``b``: ``kept = min(#positive priors, int(num * pos_fraction))`` positive priors are drawn
    uniformly without replacement among the image's positive priors (a prior in several pairs counts once, and
    its pairs are kept or dropped together); then ``min(#candidates, num - kept)`` negatives are drawn uniformly
    among the candidates (priors neither positive nor ignored, and inside ``assignment.negative`` when given).
    These are the counts of torchvision's ``BalancedPositiveNegativeSampler(num, pos_fraction)``. Dropped
    positives become neither positive nor negative: they leave the loss (detectron2 labels them -1).

    Vectorised: one random key per prior (``torch.randint``, 62 bits); the ``k`` positives (candidates) of an
    image with the highest keys are a uniformly random ``k``-subset (:func:`top_k_per_row`, no full sort).

    Worked example: ``num = 4``, ``pos_fraction = 0.5``, one image with ``P = 8``: positives ``{0, 1, 2}`` (prior
    1 in two pairs), ignored ``{3}``, candidates ``{4, 5, 6, 7}``. ``kept = min(3, 2) = 2`` positive priors, one
    of the 3 pairs ``{0,1}, {0,2}, {1,2}`` with probability 1/3 each (the pairs of prior 1 both kept or both
    dropped); ``num - kept = 2`` negatives, one of the 6 pairs of ``{4, 5, 6, 7}`` with probability 1/6 each.
    Prior 3 (ignored) and the dropped positive are never negatives.

    Args:
        assignment: the assigner's result (pairs, optional ``ignore`` / ``negative`` Tensor[B, P] bool).
        batch_size: B.
        num_priors: P.
        num: priors per image to keep (positives plus negatives), >= 1.
        pos_fraction: largest fraction of ``num`` that positives may take, in ``[0, 1]``.
        generator: random generator on the assignment's device; None draws from torch's global RNG.

    Returns:
        A new Assignment (``dataclasses.replace``): the pairs of the kept positive priors, in their input order,
        with ``weight``, ``score`` and per-pair ``extras`` (leading dimension ``M``) subsampled alike;
        ``negative`` (Tensor[B, P] bool) the drawn negatives; ``ignore`` unchanged.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"balanced_random_sampling: num must be an integer >= 1 (RPN uses 256), got {num!r}")
    if not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"balanced_random_sampling: pos_fraction must be in [0, 1] (RPN uses 0.5), got {pos_fraction}")
    positive, candidate = sampling_candidates(assignment, batch_size, num_priors)  # (B, P), (B, P)
    device = positive.device

    # a random key per prior; 62 random bits make equal keys (then the lower index wins) practically impossible
    keys = torch.randint(0, 2**62, (batch_size, num_priors), device=device, generator=generator)  # (B, P)
    max_pos = torch.full((batch_size,), int(num * pos_fraction), dtype=torch.long, device=device)  # (B,)
    kept_pos = top_k_per_row(keys, positive, max_pos)  # (B, P)
    negative = top_k_per_row(keys, candidate, num - kept_pos.sum(1))  # (B, P)

    keep_pair = kept_pos[assignment.batch_index, assignment.prior_index]  # (M,)
    return dataclasses.replace(assignment, negative=negative, **_subsample_pairs(assignment, keep_pair))


class RandomSampler:
    """Callable wrapper of :func:`balanced_random_sampling` with the sampler interface of :mod:`detector.samplers`.

    Args:
        num: priors per image (positives plus negatives); Faster R-CNN's RPN uses 256.
        pos_fraction: largest fraction of ``num`` for positives; RPN uses 0.5.
    """

    needs_losses = False

    def __init__(self, num: int = 256, pos_fraction: float = 0.5):
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"RandomSampler: num must be an integer >= 1 (RPN uses 256), got {num!r}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"RandomSampler: pos_fraction must be in [0, 1] (RPN uses 0.5), got {pos_fraction}")
        self.num = num
        self.pos_fraction = float(pos_fraction)

    def __call__(
        self,
        assignment: Assignment,
        batch_size: int,
        num_priors: int,
        prior_loss: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Assignment:
        """``prior_loss`` is accepted and not used; ``generator`` None draws from torch's global RNG."""
        return balanced_random_sampling(
            assignment, batch_size, num_priors, num=self.num, pos_fraction=self.pos_fraction, generator=generator
        )

    def __repr__(self) -> str:
        return f"RandomSampler(num={self.num}, pos_fraction={self.pos_fraction})"
