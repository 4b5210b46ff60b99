"""Samplers: after an assigner, choose which priors the dense (objectness / background) loss uses.

The interface::

    sampler(assignment: Assignment, batch_size: int, num_priors: int,
            prior_loss: Tensor[B, P] | None = None) -> Assignment

* ``needs_losses`` (bool): True when the sampler reads ``prior_loss``, each prior's classification loss
  against the background class, detached (hard-negative mining); the criterion then computes it first.
  Otherwise it passes None.
* The result is a NEW :class:`detector.structures.Assignment` (``dataclasses.replace``; the input is not
  modified) whose ``negative`` (Tensor[B, P] bool) holds the negatives to use, and whose pairs (with
  ``weight``, ``score`` and per-pair ``extras``) are subsampled when the sampler drops positives; a prior's
  pairs are kept or dropped together, and a dropped positive is neither positive nor negative.
* Ignored priors (``assignment.ignore``) and positive priors are never negatives; when the assigner already
  set ``negative``, the sampler draws inside it.
* Randomness comes from torch's global RNG (the trainer seeds it per epoch, so a resumed run repeats the same
  draws) or from a ``generator`` keyword argument; never from Python's ``random``.
* ``__repr__`` shows the parameters.

Samplers:
    :class:`RandomSampler` (``num=256, pos_fraction=0.5``): Faster R-CNN's RPN balanced random sampling.
    :class:`HardNegativeSampler` (``neg_pos_ratio=3.0, min_negatives=0``): SSD's hard-negative mining.
"""
from detector.samplers.hard_negative import HardNegativeSampler, hard_negative_mining
from detector.samplers.random import RandomSampler, balanced_random_sampling

__all__ = ["HardNegativeSampler", "RandomSampler", "balanced_random_sampling", "hard_negative_mining"]
