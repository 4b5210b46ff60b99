"""Summary statistics of one :class:`~detector.structures.Assignment`: how many positives, where, and what is left.

For logging at the start of training (and ``tools/show_assign.py``): a dict of scalar tensors kept on the
assignment's device, so a training loop on a GPU synchronises only when it turns them into numbers to print.
Shape letters as in :mod:`detector.structures` (``B`` images, ``P`` priors, ``n`` ground-truth rows, ``M`` pairs).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from detector.structures import Assignment, Priors

# statistic name (or prefix) -> what it is, for the table
_DESCRIPTIONS = {
    "num_pos": "positive pairs per image",
    "pos_per_gt": "positives per ground truth",
    "unmatched_gt": "ground truths without a positive",
    "pos_level_": "of positive pairs at level {}",
    "ignored": "ignored priors per image",
    "negatives": "negatives used per image",
}
_SHARES = ("unmatched_gt", "pos_level_")


def assignment_stats(assignment: Assignment, targets: Tensor, priors: Priors, batch_size: int) -> dict[str, Tensor]:
    """Counts and shares that say what an assigner did with a batch.

    Args:
        assignment: the assigner's result; pairs ``batch_index``, ``prior_index``, ``gt_index`` (Tensor[M] long),
            optional ``ignore`` / ``negative`` (Tensor[B, P] bool).
        targets (Tensor[n, 6]): the ``(image_index, class, x1, y1, x2, y2)`` rows ``gt_index`` refers to (only
            ``n`` is read).
        priors (Priors): the priors ``prior_index`` refers to (``level`` and the level count are read).
        batch_size (int): B (>= 1).

    Returns:
        dict of 0-d float32 tensors on the device of ``assignment.batch_index`` (no host synchronisation):

        * ``num_pos``: positive pairs per image, ``M / B``;
        * ``pos_per_gt``: positive pairs per ground-truth row, ``M / n`` (rows without a pair count; 0 if n = 0);
        * ``unmatched_gt``: share of the ``n`` rows in no pair (0 if n = 0);
        * ``pos_level_<l>`` for every level ``l``: share of the M pairs whose prior is on level ``l`` (all 0 if
          M = 0, else they sum to 1);
        * ``ignored``: ignored priors per image, ``ignore.sum() / B`` (0 when ``ignore`` is None);
        * ``negatives``: negatives the losses use per image: priors in ``negative`` (all priors when it is None)
          that are neither positive nor ignored, divided by B. With a sampler's ``negative`` (drawn among
          non-positive, non-ignored priors) this is ``negative.sum() / B``; without, ``(B * P - positive priors
          - ignored priors) / B``.

    Pairs are counted as listed: a prior in two pairs (YOLOv5 keeps duplicates) counts twice in ``num_pos``,
    ``pos_per_gt`` and ``pos_level_<l>``, once in the positive priors subtracted from the negatives.

    Example: B = 2, one level of P = 4 priors and a second of 2 (P = 6), n = 3 rows, pairs
    ``(image, prior, gt) = (0, 1, 0), (0, 4, 0), (1, 1, 2), (1, 1, 2)``, ``ignore`` = prior 5 of image 0:
    ``num_pos = 4 / 2 = 2``; ``pos_per_gt = 4 / 3``; row 1 has no pair, so ``unmatched_gt = 1 / 3``; priors
    1, 4, 1, 1 are on levels 0, 1, 0, 0, so ``pos_level_0 = 0.75`` and ``pos_level_1 = 0.25``; ``ignored = 0.5``;
    positive priors are {(0, 1), (0, 4), (1, 1)}, so ``negatives = (12 - 3 - 1) / 2 = 4``.
    """
    if batch_size < 1:
        raise ValueError(f"assignment_stats: batch_size must be >= 1, got {batch_size}")
    device = assignment.batch_index.device
    num_priors, num_gt, num_pairs = len(priors), targets.shape[0], assignment.batch_index.numel()
    zero = torch.zeros((), dtype=torch.float32, device=device)

    stats = {"num_pos": zero + num_pairs / batch_size, "pos_per_gt": zero + num_pairs / max(num_gt, 1)}
    # counts by index_add into fixed sizes: torch.bincount would read the largest index back to the host
    ones = torch.ones(num_pairs, dtype=torch.float32, device=device)  # (M,)
    pairs_per_gt = torch.zeros(num_gt, dtype=torch.float32, device=device).index_add_(0, assignment.gt_index, ones)
    stats["unmatched_gt"] = (pairs_per_gt == 0).sum().float() / max(num_gt, 1)
    pair_level = priors.level.to(device)[assignment.prior_index]  # (M,)
    per_level = torch.zeros(priors.num_levels, dtype=torch.float32, device=device).index_add_(0, pair_level, ones)
    per_level = per_level / max(num_pairs, 1)  # (L,)
    for level in range(priors.num_levels):
        stats[f"pos_level_{level}"] = per_level[level]

    ignore = assignment.ignore.to(device=device, dtype=torch.bool) if assignment.ignore is not None else None
    stats["ignored"] = zero if ignore is None else ignore.sum().float() / batch_size
    used = assignment.positive_mask(batch_size, num_priors)  # (B, P): positives are not negatives
    if ignore is not None:
        used |= ignore
    if assignment.negative is None:
        negatives = (~used).sum()
    else:
        negatives = (assignment.negative.to(device=device, dtype=torch.bool) & ~used).sum()
    stats["negatives"] = negatives.float() / batch_size
    return stats


def _describe(name: str) -> tuple[str, bool]:
    """(description, is a share) of a statistic name; unknown names describe themselves as ''."""
    if name.startswith("pos_level_"):
        return _DESCRIPTIONS["pos_level_"].format(name[len("pos_level_"):]), True
    return _DESCRIPTIONS.get(name, ""), name in _SHARES


def format_assignment_table(stats: Mapping[str, float | Tensor], title: str) -> str:
    """A fixed-width text table of :func:`assignment_stats` (floats or 0-d tensors), one line per statistic.

    Shares (``unmatched_gt``, ``pos_level_<l>``) print as percentages, the rest with two decimals::

        yolov5 on 16 images
          num_pos          104.25  positive pairs per image
          unmatched_gt       2.5%  ground truths without a positive
    """
    width = max((len(k) for k in stats), default=0)
    lines = [title]
    for name, value in stats.items():
        description, share = _describe(name)
        number = f"{float(value) * 100:.1f}%" if share else f"{float(value):.2f}"
        lines.append(f"  {name:<{width}}  {number:>9}  {description}".rstrip())
    return "\n".join(lines)
