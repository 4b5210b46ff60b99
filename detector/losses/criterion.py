"""DetectionCriterion: coder -> assigner -> optional sampler -> named loss terms -> a recipe's weighted total.

One call::

    outputs (HeadOutputs), targets (Tensor[n, 6] = image_index, class, x1, y1, x2, y2 px)
      -> [coder.decode + detection_scores, detached]   only when the assigner reads predictions
      -> assigner(priors, targets, B, pred)             Assignment: M positive (image, prior, gt) pairs (+ masks)
      -> [sampler(assignment, B, P, prior_loss)]        negatives to use (RPN 1:1 random, SSD hard negatives)
      -> terms {name: unweighted scalar}                each a small method below, reduced by the recipe
      -> {"l<name>": weight * term, ..., "loss": recipe.total(...)}

The terms (DETR's ``SetCriterion`` shape: a map from name to a method, weights in a separate dict):

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
import torch.nn.functional as F
from torch import Tensor

from detector.assigners.fcos import fcos_centerness
from detector.errors import ConfigError
from detector.losses.classification import ce_loss
from detector.losses.ranking import ap_loss, dr_loss
from detector.losses.recipes import Normalizers, YOLOv5Reduction, sum_of_level_means
from detector.losses.spec import LossSpec, parse_box_loss, parse_cls_loss
from detector.losses.stateful import StatefulLoss
from detector.ops.boxes import aligned_ciou, aligned_iou
from detector.ops.rows import gather_rows
from detector.structures import Assignment, HeadOutputs, Predictions

OBJ_TARGETS = ("ciou", "iou", "one")
CLS_TARGETS = ("assigner", "iou")
BOX_SPACES = ("decoded", "encoded")
_SIMILARITY = {"ciou": aligned_ciou, "iou": aligned_iou}

__all__ = ["DetectionCriterion", "is_ranking_loss", "sum_of_level_means"]


def is_ranking_loss(spec: LossSpec) -> bool:
    """Whether ``spec`` ranks all its inputs and returns a scalar (``ap``, ``dr``) instead of per-element values."""
    return spec.fn in (ap_loss, dr_loss)


@dataclasses.dataclass
class _Pairs:
    """The positive pairs of one call, gathered once: M rows each."""

    b: Tensor  # (M,) image
    p: Tensor  # (M,) prior
    g: Tensor  # (M,) targets row
    level: Tensor  # (M,)
    stride: Tensor  # (M, 1)
    raw: Tensor  # (M, R) raw box regression
    pred: Tensor  # (M, 4) decoded xyxy, grid units (divided by stride)
    target: Tensor  # (M, 4) gt xyxy, grid units
    gt_class: Tensor  # (M,) long


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
            prior_loss = self._background_loss(outputs, assignment) if self.sampler.needs_losses else None
            assignment = self.sampler(assignment, batch_size, num_priors, prior_loss)
        self.last_assignment = assignment

        pairs = self._gather(outputs, targets, assignment)
        keep = self._kept_priors(assignment, batch_size, num_priors, outputs.box.device)  # (B, P)
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
    def loss_box(self, pairs: _Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers) -> Tensor:
        return self._pair_box_term(self.box_loss, pairs, outputs, assignment.weight, norm)

    def loss_obj(self, pairs: _Pairs, outputs: HeadOutputs, keep: Tensor, norm: Normalizers) -> Tensor:
        obj = outputs.obj  # (B, P)
        with torch.no_grad():
            if self.obj_target == "one":
                value = torch.ones_like(pairs.pred[:, 0])  # (M,)
            else:
                value = _SIMILARITY[self.obj_target](pairs.pred, pairs.target).clamp(min=0)  # (M,)
            tobj = obj.new_zeros(obj.numel()).scatter_reduce(
                0, pairs.b * obj.shape[1] + pairs.p, value.to(obj.dtype), reduce="amax", include_self=True
            ).view_as(obj)  # (B, P); a prior in several pairs keeps its highest value
        offsets = outputs.priors.level_offsets
        if is_ranking_loss(self.obj_loss):  # one ranking per level, each a normalised scalar
            per_level = []
            for lvl in range(outputs.priors.num_levels):
                span = slice(offsets[lvl], offsets[lvl + 1])
                kept = keep[:, span]
                per_level.append(self.obj_loss(obj[:, span][kept], tobj[:, span][kept], reduction="none"))
            return self.reduction.combine_levels(per_level, balance=True)
        values = self.obj_loss(obj, tobj, reduction="none")  # (B, P)
        return self.reduction.dense(values, keep, offsets, True, norm)

    def _soft_score(self, pairs: _Pairs, assignment: Assignment) -> Tensor | None:
        """Tensor[M] class target of each pair in [0, 1], or None for hard targets."""
        if self.cls_target == "iou":
            return aligned_iou(pairs.pred.detach(), pairs.target).clamp(min=0)
        return assignment.score

    def loss_cls(self, pairs: _Pairs, outputs: HeadOutputs, assignment: Assignment, keep: Tensor,
                 norm: Normalizers) -> Tensor:
        cls, num_classes = outputs.cls, outputs.num_classes  # (B, P, C) or (B, P, C + 1)
        soft = self._soft_score(pairs, assignment)  # (M,) or None
        pos_value, neg_value = 1.0 - 0.5 * self.label_smoothing, 0.5 * self.label_smoothing
        if is_ranking_loss(self.cls_loss):
            target = torch.zeros_like(cls)
            target[pairs.b, pairs.p, pairs.gt_class] = 1.0  # (B, P, C) one-hot, multi-hot for a shared prior
            return self.cls_loss(cls[keep], target[keep], reduction="none")
        if outputs.background:  # softmax over C + 1: negatives learn the background channel
            label = torch.full(cls.shape[:2], num_classes, dtype=torch.long, device=cls.device)  # (B, P)
            label[pairs.b, pairs.p] = pairs.gt_class  # class indices: no (B, P, C + 1) one-hot is built
            smoothing = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
            if assignment.negative is None:
                values = self.cls_loss(cls, label, reduction="none", **smoothing)  # (B, P)
            else:  # a sampler kept a few priors (SSD: 3 negatives per positive): the softmax of those only
                b, p = keep.nonzero(as_tuple=True)  # (N,) each
                kept = self.cls_loss(cls[b, p], label[b, p], reduction="none", **smoothing)  # (N,)
                values = kept.new_zeros(cls.shape[:2]).index_put((b, p), kept)  # (B, P), zero off the kept priors
            return self.reduction.dense(values, keep, outputs.priors.level_offsets, False, norm)
        if outputs.obj is not None:  # YOLO: negatives are the objectness term's; classes on the pairs
            if num_classes == 1:  # YOLOv5 computes no class loss for a single class
                return cls.sum() * 0
            one_hot = F.one_hot(pairs.gt_class, num_classes).to(cls.dtype)  # (M, C)
            if soft is not None:  # soft target at the class (YOLOX: one-hot x IoU)
                one_hot = one_hot * soft.to(cls.dtype)[:, None]
            target = one_hot * (pos_value - neg_value) + neg_value
            rows = gather_rows(cls, pairs.b, pairs.p, outputs.sparse_row_grad)  # (M, C), a sparse gradient
            per_pair = self.cls_loss(rows, target, reduction="none")  # (M, C)
            return self.reduction.pairs(per_pair, pairs.level, outputs.priors.num_levels, assignment.weight, norm)
        dense = assignment.extras.get("heatmap")  # Tensor[B, P, C]: an assigner's own dense target (CenterNet)
        if dense is not None:
            values = self.cls_loss(cls, dense.to(device=cls.device, dtype=cls.dtype), reduction="none")  # (B, P, C)
            return self.reduction.dense(values, keep, outputs.priors.level_offsets, False, norm)
        score = torch.ones_like(pairs.pred[:, 0]) if soft is None else soft.to(cls.dtype)
        target = torch.full_like(cls, neg_value)
        target[pairs.b, pairs.p, pairs.gt_class] = score * (pos_value - neg_value) + neg_value  # (B, P, C)
        values = self.cls_loss(cls, target, reduction="none")  # (B, P, C)
        return self.reduction.dense(values, keep, outputs.priors.level_offsets, False, norm)

    def loss_quality(self, pairs: _Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers) -> Tensor:
        if outputs.quality is None:
            raise ConfigError("loss.weights.quality", "the head has no quality (centerness) branch; remove the weight "
                                                      "or use a head with quality: true")
        target = assignment.extras.get("centerness")
        if target is None:  # FCOS's definition from the prior centre and the gt (ATSS trains the same branch)
            centre = outputs.priors.centers[pairs.p] / pairs.stride  # (M, 2) grid units, like pairs.target
            ltrb = torch.cat((centre - pairs.target[:, :2], pairs.target[:, 2:] - centre), 1).clamp(min=1e-6)  # (M, 4)
            target = fcos_centerness(ltrb)  # (M,)
        values = self.quality_loss(outputs.quality[pairs.b, pairs.p], target.to(outputs.quality.dtype),
                                   reduction="none")  # (M,)
        return self.reduction.pairs(values, pairs.level, outputs.priors.num_levels, None, norm)

    def loss_dfl(self, pairs: _Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers) -> Tensor:
        from detector.losses.dfl import distribution_focal_loss

        bins = getattr(self.coder, "bins", None)
        if bins is None:
            raise ConfigError("loss.weights.dfl", f"needs a distribution coder (model.coder: dfl), got {self.coder!r}")
        target = self.coder.encode_at(pairs.target * pairs.stride, outputs.priors, pairs.p)  # (M, 4) in bins
        values = distribution_focal_loss(pairs.raw, target, reduction="none")  # (M,)
        return self.reduction.pairs(values, pairs.level, outputs.priors.num_levels, assignment.weight, norm)

    # ------------------------------------------------------------------------------------------ parts
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

    def _gather(self, outputs: HeadOutputs, targets: Tensor, assignment: Assignment) -> _Pairs:
        """Index the positive pairs once; decode only their M boxes."""
        priors = outputs.priors
        b, p, g = assignment.batch_index, assignment.prior_index, assignment.gt_index
        stride = priors.strides[p].to(outputs.box.dtype)[:, None]  # (M, 1)
        raw = gather_rows(outputs.box, b, p, outputs.sparse_row_grad)  # (M, R); sparse gradient (detector.ops.rows)
        pred = self.coder.decode_at(raw, priors, p) / stride  # (M, 4) grid units
        return _Pairs(b=b, p=p, g=g, level=priors.level[p], stride=stride, raw=raw, pred=pred,
                      target=targets[g, 2:6] / stride, gt_class=targets[g, 1].long())

    @staticmethod
    def _kept_priors(assignment: Assignment, batch_size: int, num_priors: int, device: torch.device) -> Tensor:
        """Tensor[B, P] bool: priors that take part in dense (objectness / background) losses."""
        keep = torch.ones(batch_size, num_priors, dtype=torch.bool, device=device)
        if assignment.ignore is not None:
            keep &= ~assignment.ignore.to(device)
        if assignment.negative is not None:
            chosen = assignment.negative.to(device).clone()
            chosen[assignment.batch_index, assignment.prior_index] = True
            keep &= chosen
        return keep

    @torch.no_grad()
    def _background_loss(self, outputs: HeadOutputs, assignment: Assignment) -> Tensor:
        """Tensor[B, P]: each prior's loss if it were a negative (what hard-negative mining ranks)."""
        if outputs.background:  # CE against the background channel; classes on dim 1 (the head's (B, C, P) buffer)
            return -F.log_softmax(outputs.cls.movedim(-1, 1), 1)[:, -1]  # (B, P); 3x faster than logsumexp here
        if outputs.obj is not None:
            return self.obj_loss(outputs.obj, torch.zeros_like(outputs.obj), reduction="none")
        return self.cls_loss(outputs.cls, torch.zeros_like(outputs.cls), reduction="none").sum(-1)

    def _pair_box_term(self, spec: LossSpec, pairs: _Pairs, outputs: HeadOutputs, weight: Tensor | None,
                       norm: Normalizers) -> Tensor:
        """A box-style loss on the positive pairs, reduced by the recipe: Tensor[] scalar."""
        if self.box_space == "encoded" and spec is self.box_loss:
            pred, target = pairs.raw, self.coder.encode_at(pairs.target * pairs.stride, outputs.priors, pairs.p)
        else:
            pred, target = pairs.pred, pairs.target
        kwargs: dict[str, Any] = {}
        if spec.accepts("pred_log_var"):
            kwargs["pred_log_var"] = outputs.box_log_var[pairs.b, pairs.p]  # (M, 4), grid-cell units like the boxes
        if spec.accepts("image_size"):
            kwargs["image_size"] = self.image_size / pairs.stride[:, 0]  # (M,)
        per_pair = spec(pred, target, reduction="none", **kwargs)  # (M,)
        if per_pair.shape != pred.shape[:1]:
            raise ValueError(f"box loss {spec.name!r} returned shape {tuple(per_pair.shape)}, expected "
                             f"({pred.shape[0]},) with reduction='none'")
        return self.reduction.pairs(per_pair, pairs.level, outputs.priors.num_levels, weight, norm)
