"""How a recipe turns per-pair and per-prior loss values into the scalar terms it adds up: a named choice.

Two recipes exist, and they differ in every step, so neither is the hidden default of a generic class:

* ``yolov5`` (:class:`YOLOv5Reduction`, ultralytics/yolov5 ``ComputeLoss``): each level's mean (over its
  positive pairs for pair terms, over its priors for dense terms), dense terms weighted per level by
  ``level_balance`` and summed over levels; the term weights scaled for the number of levels, classes and the
  image size (``train.py``); the total multiplied by the batch size.
* ``mean`` (:class:`MeanReduction`, torchvision / mmdetection's RetinaNet, SSD, FCOS and RPN): every term is a
  sum over the batch divided by one explicit ``avg_factor``: the number of positive pairs (``num_pos``; the sum
  of the pair weights for a weighted pair term), or for RPN-style recipes the number of sampled priors
  (``num_sampled``); weights used as given; the total is the weighted sum.

Interface shared by both (``values`` hold ``reduction="none"`` loss values):

* ``pairs(values (Tensor[M] or Tensor[M, K]), level (Tensor[M]), num_levels, weight (Tensor[M] | None), norm) -> Tensor[]``
* ``dense(values (Tensor[B, P] or Tensor[B, P, K]), keep (Tensor[B, P] bool), level_offsets, balance, norm) -> Tensor[]``
* ``combine_levels(per_level_scalars, balance) -> Tensor[]`` (ranking losses, which normalise themselves)
* ``gains(weights, num_levels) -> dict`` and ``total(weighted_terms, batch_size) -> Tensor[]``

``norm`` is a :class:`Normalizers` with the batch's counts. Every count a recipe divides by goes through
``norm.reduce`` first: the identity in one process, the sum over ranks under data parallelism
(:mod:`detector.engine.distributed`), so that each rank's term is its share of the global batch's term.
Shape letters as in :mod:`detector.structures`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from detector.errors import ConfigError


@dataclass
class Normalizers:
    """The counts a recipe may divide by, for one batch.

    Attributes:
        num_pos (Tensor[]): positive pairs ``M`` (float, on the loss device), over all ranks.
        num_sampled (Tensor[]): priors entering the dense terms (positives plus the negatives kept), over all ranks.
        reduce: ``Tensor[...] -> Tensor[...]``, a count of this rank -> the count of the global batch (identity in
            one process); applied to every other avg_factor a recipe computes.
    """

    num_pos: Tensor
    num_sampled: Tensor
    reduce: Callable[[Tensor], Tensor] = field(default=lambda t: t)


def sum_of_level_means(values: Tensor, level: Tensor, num_levels: int, weight: Tensor | None = None,
                       reduce: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor:
    """Sum over levels of the mean of ``values`` over the pairs of each level (YOLOv5's normalisation).

    YOLOv5 adds ``loss.mean()`` of each level's positives, so the avg_factor of level ``l`` is its number
    of pairs ``M_l`` times the number of values per pair (``C`` for class BCE). A level without pairs
    adds 0.

    Args:
        values (Tensor[M] or Tensor[M, K]): per-pair loss (``K`` values per pair, e.g. ``C`` classes).
        level (Tensor[M]): level of each pair (long, in ``[0, num_levels)``).
        weight (Tensor[M] | None): per-pair weights; the avg_factor then sums the weights instead of
            counting pairs.
        reduce: the per-level avg_factors of this rank -> those of the global batch (:class:`Normalizers`).

    Returns:
        Tensor[] scalar (differentiable; 0 with a graph when ``M = 0``).
    """
    per_pair = values[:, None] if values.dim() == 1 else values.flatten(1)  # (M, K)
    count = torch.ones_like(per_pair[:, 0]) if weight is None else weight.to(per_pair.dtype)  # (M,)
    sums = per_pair.new_zeros(num_levels).index_add(0, level, per_pair.sum(1) * count)  # (L,)
    avg_factor = reduce(per_pair.new_zeros(num_levels).index_add(0, level, count.detach())) * per_pair.shape[1]  # (L,)
    safe = torch.where(avg_factor > 0, avg_factor, torch.ones_like(avg_factor))
    return (sums / safe).sum()


class YOLOv5Reduction:
    """YOLOv5's recipe: per-level means, objectness level balance, gain scaling, the total times the batch.

    * ``pairs``: :func:`sum_of_level_means`.
    * ``dense``: for each level, the mean of ``values`` over the kept priors of that level (all images),
      times ``level_balance[l]`` when ``balance`` (objectness), summed over levels.
    * ``gains``: with ``scale_gains`` every weight times ``3 / L``, ``cls`` also times ``C / 80``, ``obj``
      also times ``(image_size / 640)^2`` (``train.py``).
    * ``total``: ``sum(terms) * B``, the scale YOLOv5's SGD hyperparameters assume.

    Args:
        level_balance: objectness weight per level, fine to coarse (YOLOv5: 4.0, 1.0, 0.4).
        scale_gains: apply ``train.py``'s scaling.
        num_classes: ``C``; image_size: side of the square input in pixels (both for the gains).
    """

    name = "yolov5"

    def __init__(self, level_balance: Sequence[float] = (4.0, 1.0, 0.4), scale_gains: bool = True, *,
                 num_classes: int, image_size: int):
        self.level_balance = tuple(float(x) for x in level_balance)
        if not self.level_balance or min(self.level_balance) <= 0:
            raise ConfigError("loss.reduction.level_balance", f"needs positive weights, one per level (YOLOv5: "
                                                              f"4.0, 1.0, 0.4), got {list(level_balance)}")
        self.scale_gains = bool(scale_gains)
        self.num_classes, self.image_size = int(num_classes), int(image_size)

    def __repr__(self) -> str:
        return f"YOLOv5Reduction(level_balance={self.level_balance}, scale_gains={self.scale_gains})"

    def check_levels(self, num_levels: int) -> None:
        if len(self.level_balance) < num_levels:
            raise ConfigError(
                "loss.level_balance",
                f"has {len(self.level_balance)} weights but the model has {num_levels} levels; give one per level",
            )

    def pairs(self, values: Tensor, level: Tensor, num_levels: int, weight: Tensor | None, norm: Normalizers) -> Tensor:
        return sum_of_level_means(values, level, num_levels, weight, norm.reduce)

    def dense(self, values: Tensor, keep: Tensor, level_offsets: Sequence[int], balance: bool,
              norm: Normalizers) -> Tensor:
        per_prior = values if values.dim() == 2 else values.mean(-1)  # (B, P): the mean over K
        spans = [slice(level_offsets[lvl], level_offsets[lvl + 1]) for lvl in range(len(level_offsets) - 1)]
        counts = norm.reduce(torch.stack([keep[:, span].sum() for span in spans]).to(per_prior.dtype))  # (L,)
        total = per_prior.new_zeros(())
        for lvl, span in enumerate(spans):
            term = torch.where(keep[:, span], per_prior[:, span], 0).sum() / counts[lvl].clamp(min=1)
            total = total + term * (self.level_balance[lvl] if balance else 1.0)
        return total

    def combine_levels(self, per_level: Sequence[Tensor], balance: bool) -> Tensor:
        """Per-level scalars (ranking losses normalise themselves) -> their sum, balanced like ``dense``."""
        return sum(t * (self.level_balance[i] if balance else 1.0) for i, t in enumerate(per_level))

    def gains(self, weights: Mapping[str, float], num_levels: int) -> dict[str, float]:
        g = dict(weights)
        if self.scale_gains:
            per_level = 3.0 / num_levels
            for name in g:
                g[name] *= per_level
            if "cls" in g:
                g["cls"] *= self.num_classes / 80.0
            if "obj" in g:
                g["obj"] *= (self.image_size / 640.0) ** 2
        return g

    def total(self, weighted: Mapping[str, Tensor], batch_size: int) -> Tensor:
        return sum(weighted.values()) * batch_size


class MeanReduction:
    """One explicit avg_factor per term, summed over the batch (torchvision / mmdetection).

    * ``pairs``: ``sum(values) / avg_factor``, or ``sum(values * weight) / sum(weight)`` with pair weights;
      values with ``K`` entries per pair are summed over ``K`` (classes), not averaged.
    * ``dense``: ``sum of values over kept priors (and K) / avg_factor``.
    * ``avg_factor``: ``num_pos`` (RetinaNet, SSD, FCOS, YOLOX) or ``num_sampled`` (Faster R-CNN's RPN: both its
      objectness and its box loss are divided by the 256 sampled anchors per image, as torchvision's RPN does).
    * ``gains``: the weights as given; ``total``: their weighted sum, times the batch size with
      ``times_batch`` (ultralytics' YOLOv8 returns ``loss.sum() * batch_size``, the scale its SGD settings assume).

    Args:
        avg_factor: ``"num_pos"`` or ``"num_sampled"`` (for the dense terms).
        times_batch: multiply the total by ``B``.
    """

    name = "mean"
    AVG_FACTORS = ("num_pos", "num_sampled")

    def __init__(self, avg_factor: str = "num_pos", times_batch: bool = False):
        if avg_factor not in self.AVG_FACTORS:
            raise ConfigError("loss.reduction.avg_factor", f"got {avg_factor!r}; valid: {', '.join(self.AVG_FACTORS)}")
        self.avg_factor, self.times_batch = avg_factor, bool(times_batch)

    def __repr__(self) -> str:
        return f"MeanReduction(avg_factor={self.avg_factor!r}, times_batch={self.times_batch})"

    def check_levels(self, num_levels: int) -> None:
        pass

    def pairs(self, values: Tensor, level: Tensor, num_levels: int, weight: Tensor | None, norm: Normalizers) -> Tensor:
        per_pair = values if values.dim() == 1 else values.flatten(1).sum(1)  # (M,)
        if weight is None:
            avg = norm.num_pos if self.avg_factor == "num_pos" else norm.num_sampled
            return per_pair.sum() / avg.clamp(min=1)
        weight = weight.to(per_pair.dtype)
        return (per_pair * weight).sum() / norm.reduce(weight.detach().sum()).clamp(min=1e-6)

    def dense(self, values: Tensor, keep: Tensor, level_offsets: Sequence[int], balance: bool,
              norm: Normalizers) -> Tensor:
        per_prior = values if values.dim() == 2 else values.sum(-1)  # (B, P)
        avg = norm.num_pos if self.avg_factor == "num_pos" else norm.num_sampled
        return torch.where(keep, per_prior, 0).sum() / avg.clamp(min=1)

    def combine_levels(self, per_level: Sequence[Tensor], balance: bool) -> Tensor:
        """Per-level scalars (ranking losses normalise themselves) -> their mean over levels."""
        return sum(per_level) / max(len(per_level), 1)

    def gains(self, weights: Mapping[str, float], num_levels: int) -> dict[str, float]:
        return dict(weights)

    def total(self, weighted: Mapping[str, Tensor], batch_size: int) -> Tensor:
        return sum(weighted.values()) * (batch_size if self.times_batch else 1)
