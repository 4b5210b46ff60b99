"""Loss functions by family, and the criterion that composes them.

* :mod:`detector.losses.box`: ``BOX``, box regression losses on matched pairs.
* :mod:`detector.losses.classification`: ``CLS``, classification / objectness losses (with the ranking
  losses of :mod:`detector.losses.ranking`).
* :mod:`detector.losses.spec`: config entry -> :class:`LossSpec` (name, function, bound parameters).
* :mod:`detector.losses.criterion`: :class:`DetectionCriterion`, assigner + coder + weighted terms.
* :mod:`detector.losses.terms`: the criterion's terms as functions of the positive pairs, and their helpers.
"""
from detector.losses.box import BOX
from detector.losses.classification import CLS
from detector.losses.criterion import DetectionCriterion, is_ranking_loss
from detector.losses.spec import LossSpec, make_loss, parse_box_loss, parse_cls_loss, parse_loss_spec

__all__ = [
    "BOX",
    "CLS",
    "DetectionCriterion",
    "LossSpec",
    "is_ranking_loss",
    "make_loss",
    "parse_box_loss",
    "parse_cls_loss",
    "parse_loss_spec",
]
