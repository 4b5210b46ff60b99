"""DetectionCriterion: coder -> assigner -> optional sampler -> named loss terms -> a recipe's weighted total.

One call::

    outputs (HeadOutputs), targets (Tensor[n, 6] = image_index, class, x1, y1, x2, y2 px)
      -> [coder.decode + detection_scores, detached]   only when the assigner reads predictions
      -> assigner(priors, targets, B, pred)             Assignment: M positive (image, prior, gt) pairs (+ masks)
      -> [sampler(assignment, B, P, prior_loss)]        negatives to use (RPN 1:1 random, SSD hard negatives)
      -> terms {name: unweighted scalar}                each a small function, reduced by the recipe
      -> {"l<name>": weight * term, ..., "loss": recipe.total(...)}

The terms (DETR's ``SetCriterion`` shape: a map from name to a method, weights in a separate dict; the
methods pass this criterion's settings to the functions of :mod:`detector.losses.terms`):

* ``box``: ``box_loss(pred, target)`` on the positive pairs, with ``Assignment.weight`` as pair weights. With
  ``box_space="decoded"`` both are xyxy boxes divided by the prior's stride (grid units; only the M positive
  priors are decoded); with ``"encoded"`` ``pred`` is the raw regression and ``target`` the coder's encoding of
  the gt (SSD / R-CNN smooth-L1 on deltas).
* ``obj`` (heads with objectness): over all kept priors; target 0, and at positives the detached similarity of
  the pair's decoded box with its gt clamped at 0 (``obj_target``: ``ciou`` YOLOv5, ``iou``, or ``one``). A prior
  in several pairs takes the highest value: YOLOv5 with ``sort_obj_iou=True``; its default (False) keeps the
  value of the last pair written, which depends on the pair order.
* ``cls``: with objectness, on the positive pairs with one-hot targets (times ``Assignment.score`` when the
  assigner gives soft targets; none for a single class, as YOLOv5); without, over all kept priors (sigmoid head:
  0 except ``score`` or 1 at the pair's class; softmax head: cross-entropy against the class, the background
  channel for negatives). Ranking losses (``ap``, ``dr``) rank
  the class logits of all kept priors and normalise themselves.
* ``quality`` (heads with a quality branch, FCOS centerness): BCE on the positives against
  ``Assignment.extras["centerness"]``, or, when the assigner gives none (ATSS), the same centerness computed from
  the prior's centre and its gt.
* ``dfl`` (distribution heads, YOLOv8): Distribution Focal Loss of the pair's per-side bin logits against the
  coder's encoding of the gt (continuous ltrb distances in bins), with the pair weights of ``box``.
* extra box-style terms named in ``weights`` (``var``: the KL loss that trains ``box_log_var``).

"Kept priors" are all priors minus ``Assignment.ignore``, restricted to positives plus
``Assignment.negative`` when a sampler set it. The recipe (:mod:`detector.losses.recipes`) says how values
become terms and terms the total. Shape letters as in :mod:`detector.structures`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from detector.errors import ConfigError
from detector.losses.classification import ce_loss
from detector.losses.recipes import Normalizers, YOLOv5Reduction, sum_of_level_means
from detector.losses.spec import LossSpec, parse_box_loss, parse_cls_loss
from detector.losses.stateful import StatefulLoss
from detector.losses.terms import (  # noqa: F401 (is_ranking_loss re-exported)
    Pairs, background_loss, cls_term, dfl_term, gather_pairs, is_ranking_loss, kept_priors, obj_term, pair_box_term,
    quality_term,
)
from detector.structures import Assignment, HeadOutputs, Predictions

OBJ_TARGETS = ("ciou", "iou", "one")
CLS_TARGETS = ("assigner", "iou")
BOX_SPACES = ("decoded", "encoded")

__all__ = ["DetectionCriterion", "is_ranking_loss", "sum_of_level_means"]


class DetectionCriterion:
    """Compose a box coder, an assigner, an optional sampler and named loss terms under a recipe.

    Args:
        assigner: ``assigner(priors, targets, batch_size, pred=None) -> Assignment`` with ``needs_predictions``.
        coder: ``decode(raw, priors)``, ``decode_at(raw_M, priors, prior_index)``, ``encode_at(boxes_M, priors,
            prior_index)`` (:mod:`detector.ops.coders`).
        box_loss, cls_loss: :class:`LossSpec` or a config entry (``"ciou"``, ``{name: focal, gamma: 1.5}``).
        obj_loss: a binary loss from ``CLS`` (``ce`` refused), or None for heads without objectness.
        weights: term name -> weight: ``box``, ``cls``, ``obj`` with ``obj_loss``, ``quality`` with
            ``quality_loss``, and extra box-style terms (``var``); an ``obj`` weight without ``obj_loss`` is
            ignored, so an inherited config needs no editing.
        num_classes: ``C``; image_size: side of the square input in pixels.
        reduction: a recipe from :mod:`detector.losses.recipes`; None builds :class:`YOLOv5Reduction` from
            ``level_balance`` and ``scale_gains`` (which must not be given with an explicit reduction).
        sampler: optional ``sampler(assignment, B, P, prior_loss) -> Assignment`` with ``needs_losses``.
        obj_target: ``ciou`` (YOLOv5), ``iou`` or ``one``.
        label_smoothing: class targets ``1 - eps/2`` and ``eps/2`` (YOLOv5's ``smooth_BCE``); refused when the
            class loss sets its own ``label_smoothing`` (they would compound).
        box_space: ``decoded`` (IoU family on boxes) or ``encoded`` (losses on the coder's deltas).
        cls_target: the class target of a positive: ``assigner`` (``Assignment.score`` when the assigner gives
            one, else 1) or ``iou`` (the detached IoU of the pair's decoded box with its gt: VFL / QFL / GFL).
        quality_loss: loss of the quality branch (default ``bce``) when ``weights`` has ``quality``.
        extra_losses: term name -> box-style loss for extra weight keys (``var`` defaults to ``kl``).
    """

    def __init__(self, assigner: Any, coder: Any, box_loss: Any, cls_loss: Any, obj_loss: Any,
                 weights: Mapping[str, float], *, num_classes: int, image_size: int, reduction: Any = None,
                 sampler: Any = None, obj_target: str = "ciou", level_balance: Any = None,
                 scale_gains: bool | None = None, label_smoothing: float = 0.0, box_space: str = "decoded",
                 cls_target: str = "assigner",
                 quality_loss: Any = "bce", extra_losses: Mapping[str, Any] | None = None):
        self.assigner, self.coder, self.sampler = assigner, coder, sampler
        self.box_loss = parse_box_loss(box_loss, "loss.box")
        self.cls_loss = parse_cls_loss(cls_loss, "loss.cls")
        self.obj_loss = None if obj_loss is None else parse_cls_loss(obj_loss, "loss.obj")
        if self.obj_loss is not None and self.obj_loss.fn is ce_loss:
            raise ConfigError("loss.obj", "'ce' is a softmax over a class dimension, but objectness has one logit "
                                          "per prior; use a binary loss (bce, balanced_bce, focal, mse) or ap, dr")
        if obj_target not in OBJ_TARGETS:
            raise ConfigError("loss.obj_target", f"got {obj_target!r}; valid: {', '.join(OBJ_TARGETS)}")
        if cls_target not in CLS_TARGETS:
            raise ConfigError("loss.cls_target", f"got {cls_target!r}; valid: {', '.join(CLS_TARGETS)}")
        self.cls_target = cls_target
        if box_space not in BOX_SPACES:
            raise ConfigError("loss.box_space", f"got {box_space!r}; valid: {', '.join(BOX_SPACES)}")
        if box_space == "encoded" and getattr(coder, "num_outputs", 4) != 4:
            raise ConfigError("loss.box_space", f"'encoded' compares the raw regression with the coder's encoding, "
                                                f"but {coder!r} has {coder.num_outputs} raw values per prior and 4 "
                                                f"targets; use 'decoded'")
        if not 0 <= label_smoothing < 1:
            raise ConfigError("loss.label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        if label_smoothing and self.cls_loss.params.get("label_smoothing"):
            raise ConfigError("loss.label_smoothing", "is set and so is loss.cls.label_smoothing; the two would "
                                                      "compound: set one of them")
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        if reduction is None:
            reduction = YOLOv5Reduction((4.0, 1.0, 0.4) if level_balance is None else level_balance,
                                        True if scale_gains is None else scale_gains,
                                        num_classes=self.num_classes, image_size=self.image_size)
        elif level_balance is not None or scale_gains is not None:
            raise ValueError("level_balance and scale_gains belong to the YOLOv5 reduction; give them to it")
        self.reduction = reduction
        self.obj_target, self.label_smoothing, self.box_space = obj_target, float(label_smoothing), box_space
        self.quality_loss = parse_cls_loss(quality_loss, "loss.quality") if "quality" in weights else None

        needed = {"box", "cls"} | ({"obj"} if self.obj_loss is not None else set())
        missing = sorted(needed - set(weights))
        if missing:
            raise ConfigError("loss.weights", f"missing weight(s) {missing}; the terms in use are {sorted(needed)}")
        extra_losses = dict(extra_losses or {})
        self.extra_losses: dict[str, LossSpec] = {}
        for name in weights:
            if name in ("box", "obj", "cls", "quality", "dfl"):
                continue
            if name not in extra_losses and name != "var":
                valid = sorted(needed | set(extra_losses) | {"var", "quality", "dfl"})
                raise ConfigError(f"loss.weights.{name}", f"no loss term {name!r}; valid: {', '.join(valid)} "
                                                          "(extra terms need a loss in extra_losses)")
            self.extra_losses[name] = parse_box_loss(extra_losses.get(name, "kl"), f"loss.{name}")
        unused = sorted(set(extra_losses) - set(self.extra_losses))
        if unused:
            raise ConfigError(f"loss.{unused[0]}", f"extra loss term(s) {unused} have no weight in loss.weights")
        self.weights = {k: float(v) for k, v in weights.items() if k != "obj" or self.obj_loss is not None}
        self.last_assignment: Assignment | None = None
        self.count_reducer: Callable[[Tensor], Tensor] | None = None
        """Data parallelism: a count of this rank's batch -> the global batch's (sum over ranks); see
        :mod:`detector.engine.distributed`. None: one process."""

    def __repr__(self) -> str:
        terms = {"box": self.box_loss, "obj": self.obj_loss, "cls": self.cls_loss, "quality": self.quality_loss,
                 **self.extra_losses}
        listed = ", ".join(f"{k}={v!r}*{self.weights[k]:g}" for k, v in terms.items() if v is not None)
        return (f"DetectionCriterion({listed}, reduction={self.reduction!r}, obj_target={self.obj_target!r}, "
                f"box_space={self.box_space!r}, label_smoothing={self.label_smoothing:g}, "
                f"assigner={self.assigner!r}, sampler={self.sampler!r})")

    # ------------------------------------------------------------------------------------------ state
    def stateful_losses(self) -> dict[str, StatefulLoss]:
        """Term name -> the stateful losses in use (``wiou``'s running mean, ``ghm``'s histogram), by term."""
        specs = {"box": self.box_loss, "obj": self.obj_loss, "cls": self.cls_loss, "quality": self.quality_loss,
                 **self.extra_losses}
        return {name: spec.fn for name, spec in specs.items() if spec is not None and isinstance(spec.fn, StatefulLoss)}

    def train(self, mode: bool = True) -> "DetectionCriterion":
        """Let the stateful losses update their state (True, the default) or only use it (False)."""
        for loss in self.stateful_losses().values():
            loss.train(mode)
        return self

    def eval(self) -> "DetectionCriterion":
        return self.train(False)

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """{term name: that loss's state} for the stateful losses; {} when there are none (the trainer's
        checkpoint keeps it under ``"criterion"``)."""
        return {name: loss.state_dict() for name, loss in self.stateful_losses().items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Restore what :meth:`state_dict` returned; the terms must match this criterion's stateful losses."""
        losses = self.stateful_losses()
        if set(state) != set(losses):
            raise ValueError(f"DetectionCriterion.load_state_dict: the state has terms {sorted(state)}, this "
                             f"criterion's stateful losses are {sorted(losses)} (was the loss config changed?)")
        for name, loss in losses.items():
            loss.load_state_dict(state[name])

    def gains(self, num_levels: int) -> dict[str, float]:
        """The weight of each term after the recipe's scaling for ``num_levels`` levels."""
        return self.reduction.gains(self.weights, num_levels)

    @property
    def class_rows_only(self) -> bool:
        """True when this criterion reads the class logits only at its positive pairs: a head with objectness
        (negatives are the objectness term's), an assigner that does not read predicted scores (``needs_scores``,
        True by default for one with ``needs_predictions``), no sampler, a non-ranking class loss. The head may then
        leave them uncopied (:func:`detector.build.link_class_rows`)."""
        reads_scores = getattr(self.assigner, "needs_predictions", False) and getattr(self.assigner, "needs_scores",
                                                                                    True)
        return (self.obj_loss is not None and not reads_scores and self.sampler is None
                and not is_ranking_loss(self.cls_loss))

    # ------------------------------------------------------------------------------------------ call
    def __call__(self, outputs: HeadOutputs, targets: Tensor) -> dict[str, Tensor]:
        """outputs (HeadOutputs), targets (Tensor[n, 6]) -> {"lbox", "lcls", "lobj"?, ..., "loss"} scalars."""
        priors = outputs.priors
        batch_size, num_priors = outputs.box.shape[:2]
        self._check(outputs)
        targets = targets.to(device=outputs.box.device, dtype=outputs.box.dtype)  # (n, 6)

        pred = None
        if getattr(self.assigner, "needs_predictions", False):
            with torch.no_grad():
                names = [k for k in ("box", "cls", "obj", "quality") if getattr(outputs, k) is not None]
                detached = dataclasses.replace(outputs, **{k: getattr(outputs, k).detach() for k in names})
                pred = Predictions(boxes=self.coder.decode(detached.box, priors), outputs=detached)
        assignment = self.assigner(priors, targets, batch_size, pred)
        if self.sampler is not None:
            prior_loss = (background_loss(outputs, obj_loss=self.obj_loss, cls_loss=self.cls_loss)
                          if self.sampler.needs_losses else None)
            assignment = self.sampler(assignment, batch_size, num_priors, prior_loss)
        self.last_assignment = assignment

        pairs = gather_pairs(self.coder, outputs, targets, assignment)
        keep = kept_priors(assignment, batch_size, num_priors, outputs.box.device)  # (B, P)
        reduce = self.count_reducer or (lambda t: t)
        counts = reduce(torch.stack((keep.new_tensor(float(pairs.b.numel()), dtype=outputs.box.dtype),
                                     keep.sum().to(outputs.box.dtype),
                                     keep.new_tensor(float(batch_size), dtype=outputs.box.dtype))))
        norm = Normalizers(num_pos=counts[0], num_sampled=counts[1], reduce=reduce)
        raw = {"box": self.loss_box(pairs, outputs, assignment, norm)}
        if self.obj_loss is not None:
            raw["obj"] = self.loss_obj(pairs, outputs, keep, norm)
        raw["cls"] = self.loss_cls(pairs, outputs, assignment, keep, norm)
        if self.quality_loss is not None:
            raw["quality"] = self.loss_quality(pairs, outputs, assignment, norm)
        if "dfl" in self.weights:
            raw["dfl"] = self.loss_dfl(pairs, outputs, assignment, norm)
        for name, spec in self.extra_losses.items():
            raw[name] = self._pair_box_term(spec, pairs, outputs, assignment.weight, norm)

        gains = self.gains(priors.num_levels)
        result = {f"l{name}": value * gains[name] for name, value in raw.items()}
        result["loss"] = self.reduction.total(result, batch_size if self.count_reducer is None else counts[2])
        return result

    # ------------------------------------------------------------------------------------------ terms
    # term name -> method: this criterion's settings given to a function of detector.losses.terms; a Tensor[] scalar
    def loss_box(self, pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers) -> Tensor:
        return self._pair_box_term(self.box_loss, pairs, outputs, assignment.weight, norm)

    def loss_obj(self, pairs: Pairs, outputs: HeadOutputs, keep: Tensor, norm: Normalizers) -> Tensor:
        return obj_term(pairs, outputs, keep, norm, loss=self.obj_loss, target=self.obj_target,
                        reduction=self.reduction)

    def loss_cls(self, pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, keep: Tensor,
                 norm: Normalizers) -> Tensor:
        return cls_term(pairs, outputs, assignment, keep, norm, loss=self.cls_loss, reduction=self.reduction,
                        label_smoothing=self.label_smoothing, cls_target=self.cls_target)

    def loss_quality(self, pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers) -> Tensor:
        return quality_term(pairs, outputs, assignment, norm, loss=self.quality_loss, reduction=self.reduction)

    def loss_dfl(self, pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers) -> Tensor:
        return dfl_term(pairs, outputs, assignment, norm, coder=self.coder, reduction=self.reduction)

    def _pair_box_term(self, spec: LossSpec, pairs: Pairs, outputs: HeadOutputs, weight: Tensor | None,
                       norm: Normalizers) -> Tensor:
        """A box-style loss on the positive pairs; ``box`` on the coder's encodings with ``box_space="encoded"``."""
        encoded = self.box_space == "encoded" and spec is self.box_loss
        return pair_box_term(pairs, outputs, weight, norm, loss=spec, reduction=self.reduction,
                             image_size=self.image_size, coder=self.coder if encoded else None)

    # ------------------------------------------------------------------------------------------ checks
    def _check(self, outputs: HeadOutputs) -> None:
        if outputs.num_classes != self.num_classes:
            raise ValueError(f"DetectionCriterion: the head predicts {outputs.num_classes} classes, the criterion "
                             f"was built for num_classes={self.num_classes}")
        if self.obj_loss is not None and outputs.obj is None:
            raise ConfigError("loss.obj", "is set but the model's head has no objectness output; set loss.obj: null")
        if outputs.background and self.cls_loss.fn is not ce_loss:
            raise ConfigError("loss.cls", f"the head scores classes with a softmax over a background channel; "
                                          f"its class loss must be 'ce', got {self.cls_loss.name!r}")
        self.reduction.check_levels(outputs.priors.num_levels)
        uses_var = [s.name for s in (self.box_loss, *self.extra_losses.values()) if s.accepts("pred_log_var")]
        if uses_var and outputs.box_log_var is None:
            raise ConfigError("model.box_uncertainty", f"loss {uses_var[0]!r} needs predicted box variances, but the "
                                                       "model has none; set model.box_uncertainty: true")
