"""DetectionCriterion: assigner + box coder + named, weighted loss terms (DETR-style), YOLOv5 by default.

One call::

    outputs (HeadOutputs), targets (Tensor[n, 6] = image_index, class, x1, y1, x2, y2 px)
      -> coder.decode(outputs.box)                      pred boxes, Tensor[B, P, 4] xyxy px
      -> assigner(priors, targets, B, pred_boxes=...)   Assignment: M positive (image, prior, gt) pairs
      -> lbox, lobj, lcls (+ extra terms), each normalised here by an explicit avg_factor and weighted
      -> {"lbox", "lobj", "lcls", ..., "loss"}

Defaults reproduce ultralytics/yolov5 ``utils/loss.py`` ``ComputeLoss`` with the gains of its
``train.py``; see :class:`DetectionCriterion`. Shape letters as in :mod:`detector.structures`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.errors import ConfigError
from detector.losses.classification import ce_loss
from detector.losses.ranking import ap_loss, dr_loss
from detector.losses.spec import LossSpec, parse_box_loss, parse_cls_loss
from detector.ops.boxes import aligned_ciou, aligned_iou
from detector.structures import Assignment, HeadOutputs

RANKING_LOSSES: tuple[Callable[..., Tensor], ...] = (ap_loss, dr_loss)
OBJ_TARGETS = ("ciou", "iou", "one")
BASE_TERMS = ("box", "obj", "cls")
_SIMILARITY = {"ciou": aligned_ciou, "iou": aligned_iou}


def is_ranking_loss(spec: LossSpec) -> bool:
    """Whether ``spec`` ranks all its inputs and returns a scalar (``ap``, ``dr``) instead of per-element values."""
    return spec.fn in RANKING_LOSSES


def sum_of_level_means(values: Tensor, level: Tensor, num_levels: int, weight: Tensor | None = None) -> Tensor:
    """Sum over levels of the mean of ``values`` over the pairs of each level (YOLOv5's normalisation).

    YOLOv5 adds ``loss.mean()`` of each level's positives, so the avg_factor of level ``l`` is its number
    of pairs ``M_l`` times the number of values per pair (``C`` for class BCE). A level without pairs
    adds 0.

    Args:
        values (Tensor[M] or Tensor[M, K]): per-pair loss (``K`` values per pair, e.g. ``C`` classes).
        level (Tensor[M]): level of each pair (long, in ``[0, num_levels)``).
        weight (Tensor[M] | None): per-pair weights; the avg_factor then sums the weights instead of
            counting pairs.

    Returns:
        Tensor[] scalar (differentiable; 0 with a graph when ``M = 0``).
    """
    per_pair = values[:, None] if values.dim() == 1 else values.flatten(1)  # (M, K)
    count = torch.ones_like(per_pair[:, 0]) if weight is None else weight.to(per_pair.dtype)  # (M,)
    sums = per_pair.new_zeros(num_levels).index_add(0, level, per_pair.sum(1) * count)  # (L,)
    avg_factor = per_pair.new_zeros(num_levels).index_add(0, level, count) * per_pair.shape[1]  # (L,)
    safe = torch.where(avg_factor > 0, avg_factor, torch.ones_like(avg_factor))
    return (sums / safe).sum()


class DetectionCriterion:
    """Compose an assigner, a box coder and named loss terms; return weighted terms and their total.

    Terms (each a scalar, weighted; "per image" in YOLOv5's sense):

    * ``lbox``: for each level, the mean over its positive pairs of ``box_loss(pred, target)``, summed
      over levels (YOLOv5). ``pred`` is the coder's decoding of the pair's prior, and both boxes are
      divided by the stride of the prior (grid-cell units, see :mod:`detector.losses.box`). Box losses
      whose signature names them also get ``pred_log_var = box_log_var`` (the head's log-variance is
      already in grid-cell units, :class:`HeadOutputs`) and ``image_size / stride``.
    * ``lobj``: per level, the mean over that level's priors (all images, minus ``Assignment.ignore``,
      restricted to positives and ``Assignment.negative`` when the latter is given) of
      ``obj_loss(obj_logit, t)`` times ``level_balance[l]``, summed. ``t`` is 0 except at positives,
      where it is the detached similarity of the pair's decoded box and its ground truth, clamped at 0:
      CIoU (``obj_target="ciou"``, YOLOv5: it reuses the CIoU of its box loss), plain IoU (``"iou"``)
      or 1 (``"one"``). A prior in several pairs takes the highest value (YOLOv5 sorts pairs by IoU so
      that the highest is written last; a scatter-max gives the same result deterministically).
    * ``lcls``: with an objectness branch, per level the mean over positive pairs and classes
      (avg_factor ``M_l * C``) of ``cls_loss(cls_logits, one_hot)``, summed; skipped when
      ``num_classes == 1`` (YOLOv5: objectness is then the class score). Without an objectness branch
      (``obj_loss=None``) the class loss covers every prior (one-hot at positives, zero elsewhere,
      ignore/negative as for ``lobj``), summed and divided by the number of positive pairs
      (RetinaNet / FCOS; ``Assignment.weight`` applies to the pair terms only). ``label_smoothing``
      turns one-hot targets into ``1 - eps/2`` and ``eps/2`` (YOLOv5's ``smooth_BCE``, applied whatever
      the per-element class loss; not to ranking losses).
    * Ranking losses (``ap``, ``dr``) for ``cls`` are applied once over the class logits of all priors
      of all images (ignored priors left out, ``negative`` respected) with one-hot targets at
      positives; they normalise themselves (AP-loss: ``1 - AP``; DR: one logistic term) and their
      value is used as is. For ``obj`` they rank each level's objectness logits (positives: target
      > 0) and are weighted by ``level_balance``.
    * Extra terms: every key of ``weights`` other than box/obj/cls names a term computed on the
      positive pairs like ``lbox`` with a loss from ``extra_losses``; ``"var"`` defaults to the ``kl``
      loss (He et al. 2019), which trains ``box_log_var``. Returned as ``l<name>``.

    Weights (gains): ``weights["box"]``, ``["obj"]``, ``["cls"]`` (YOLOv5 ``hyp.scratch-low``: 0.05,
    1.0, 0.5). With ``scale_gains`` they are scaled as YOLOv5's ``train.py`` does for ``nl`` levels:
    box and extra terms by ``3 / nl``, cls by ``nc / 80 * 3 / nl``, obj by ``(image_size / 640)^2 * 3 / nl``.

    The returned ``"loss"`` is ``(lbox + lobj + lcls + extras) * B``, as YOLOv5 returns (its SGD
    recipe assumes this scale); the trainer backpropagates it and logs the other entries.

    Args:
        assigner: ``assigner(priors, targets, batch_size, pred_boxes=None) -> Assignment``.
        coder: has ``decode(raw (Tensor[B, P, 4]), priors) -> Tensor[B, P, 4]`` xyxy px.
        box_loss, cls_loss: :class:`LossSpec` (or a config entry, parsed with ``loss.box`` /
            ``loss.cls`` as its key) from ``BOX`` / ``CLS``.
        obj_loss: :class:`LossSpec` from ``CLS`` (``ce`` is refused: one logit per prior), or None for
            heads without objectness.
        weights: term name -> weight; needs ``box``, ``cls`` and (with ``obj_loss``) ``obj``; an ``obj``
            weight without ``obj_loss`` is ignored (so inherited config weights need no editing).
        num_classes: ``C``; must match the head.
        image_size: side of the (square) network input in pixels, for the obj gain and ``yolov3_mse``.
        obj_target: ``"ciou"`` (YOLOv5), ``"iou"`` or ``"one"``.
        level_balance: objectness weight per level, fine to coarse; at least one per level.
        scale_gains: apply YOLOv5's gain scaling.
        label_smoothing: class-target smoothing ``eps`` (0 = none).
        extra_losses: term name -> box-style :class:`LossSpec` for extra weight keys.

    Raises:
        ConfigError: on a bad choice of target, weights or loss slot (naming the config key).
    """

    def __init__(
        self,
        assigner: Callable[..., Assignment],
        coder: Any,
        box_loss: LossSpec | str | Mapping[str, Any],
        cls_loss: LossSpec | str | Mapping[str, Any],
        obj_loss: LossSpec | str | Mapping[str, Any] | None,
        weights: Mapping[str, float],
        *,
        num_classes: int,
        image_size: int,
        obj_target: str = "ciou",
        level_balance: Sequence[float] = (4.0, 1.0, 0.4),
        scale_gains: bool = True,
        label_smoothing: float = 0.0,
        extra_losses: Mapping[str, LossSpec | str | Mapping[str, Any]] | None = None,
    ):
        self.assigner, self.coder = assigner, coder
        self.box_loss = parse_box_loss(box_loss, "loss.box")
        self.cls_loss = parse_cls_loss(cls_loss, "loss.cls")
        self.obj_loss = None if obj_loss is None else parse_cls_loss(obj_loss, "loss.obj")
        if self.obj_loss is not None and self.obj_loss.fn is ce_loss:
            raise ConfigError(
                "loss.obj",
                "'ce' is a softmax over a class dimension, but objectness has one logit per prior; "
                "use a binary loss (bce, balanced_bce, focal, mse) or a ranking loss (ap, dr)",
            )
        if obj_target not in OBJ_TARGETS:
            raise ConfigError("loss.obj_target", f"got {obj_target!r}; valid: {', '.join(OBJ_TARGETS)}")
        if not 0 <= label_smoothing < 1:
            raise ConfigError("loss.label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        self.obj_target = obj_target
        self.level_balance = tuple(float(x) for x in level_balance)
        self.scale_gains, self.label_smoothing = bool(scale_gains), float(label_smoothing)

        extra_losses = dict(extra_losses or {})
        needed = {"box", "cls"} | ({"obj"} if self.obj_loss is not None else set())
        missing = sorted(needed - set(weights))
        if missing:
            raise ConfigError("loss.weights", f"missing weight(s) {missing}; the terms in use are {sorted(needed)}")
        self.extra_losses: dict[str, LossSpec] = {}
        for name in weights:
            if name in BASE_TERMS:
                continue
            if name in extra_losses:
                spec = extra_losses[name]
            elif name == "var":
                spec = "kl"
            else:
                valid = sorted(needed | set(extra_losses) | {"var"})
                raise ConfigError(
                    f"loss.weights.{name}",
                    f"no loss term {name!r}; valid: {', '.join(valid)} (extra terms need a loss in extra_losses)",
                )
            self.extra_losses[name] = parse_box_loss(spec, f"loss.{name}")
        unused = sorted(set(extra_losses) - set(self.extra_losses))
        if unused:
            raise ConfigError(f"loss.{unused[0]}", f"extra loss term(s) {unused} have no weight in loss.weights")
        self.weights = {k: float(v) for k, v in weights.items() if k != "obj" or self.obj_loss is not None}

    def __repr__(self) -> str:
        terms = {"box": self.box_loss, "obj": self.obj_loss, "cls": self.cls_loss, **self.extra_losses}
        listed = ", ".join(f"{k}={v!r}*{self.weights[k]:g}" for k, v in terms.items() if v is not None)
        return (f"DetectionCriterion({listed}, obj_target={self.obj_target!r}, level_balance={self.level_balance}, "
                f"scale_gains={self.scale_gains}, label_smoothing={self.label_smoothing:g}, "
                f"assigner={self.assigner!r})")

    # ------------------------------------------------------------------------------------------ gains
    def gains(self, num_levels: int) -> dict[str, float]:
        """The weight of each term after YOLOv5's scaling for ``num_levels`` levels (when ``scale_gains``)."""
        g = dict(self.weights)
        if self.scale_gains:
            per_level = 3.0 / num_levels
            for name in g:
                g[name] *= per_level
            g["cls"] *= self.num_classes / 80.0
            if "obj" in g:
                g["obj"] *= (self.image_size / 640.0) ** 2
        return g

    # ------------------------------------------------------------------------------------------ call
    def __call__(self, outputs: HeadOutputs, targets: Tensor) -> dict[str, Tensor]:
        """outputs (HeadOutputs), targets (Tensor[n, 6]) -> {"lbox", "lobj", "lcls", "l<extra>", "loss"} scalars."""
        priors = outputs.priors
        batch_size, num_priors = outputs.box.shape[:2]
        num_levels = priors.num_levels
        self._check(outputs, num_levels)
        targets = targets.to(device=outputs.box.device, dtype=outputs.box.dtype)  # (n, 6)

        decoded = self.coder.decode(outputs.box, priors)  # (B, P, 4) xyxy px
        assignment = self.assigner(priors, targets, batch_size, pred_boxes=decoded.detach())
        b, p, g = assignment.batch_index, assignment.prior_index, assignment.gt_index  # (M,) each
        level = priors.level[p]  # (M,)
        stride = priors.strides[p].to(decoded.dtype)[:, None]  # (M, 1)
        pred = decoded[b, p] / stride  # (M, 4) xyxy grid units
        target_boxes = targets[g, 2:6] / stride  # (M, 4)
        pos_flat = b * num_priors + p  # (M,) index into B * P
        valid = self._valid_priors(assignment, pos_flat, batch_size, num_priors, outputs.box.device)  # (B, P)

        raw: dict[str, Tensor] = {}
        raw["box"] = self._pair_term(self.box_loss, pred, target_boxes, outputs, b, p, stride, level, num_levels,
                                     assignment.weight)
        if self.obj_loss is not None:
            raw["obj"] = self._objectness(outputs, pred.detach(), target_boxes, pos_flat, valid)
        raw["cls"] = self._classification(outputs, targets[g, 1].long(), b, p, level, valid, assignment.weight)
        for name, spec in self.extra_losses.items():
            raw[name] = self._pair_term(spec, pred, target_boxes, outputs, b, p, stride, level, num_levels,
                                        assignment.weight)

        gains = self.gains(num_levels)
        result = {f"l{name}": value * gains[name] for name, value in raw.items()}
        result["loss"] = sum(result.values()) * batch_size
        return result

    # ------------------------------------------------------------------------------------------ parts
    def _check(self, outputs: HeadOutputs, num_levels: int) -> None:
        if outputs.num_classes != self.num_classes:
            raise ValueError(
                f"DetectionCriterion: the head predicts {outputs.num_classes} classes, the criterion was built "
                f"for num_classes={self.num_classes}"
            )
        if self.obj_loss is not None and outputs.obj is None:
            raise ConfigError("loss.obj", "is set but the model's head has no objectness output; set loss.obj: null")
        if len(self.level_balance) < num_levels:
            raise ConfigError(
                "loss.level_balance",
                f"has {len(self.level_balance)} weights but the model has {num_levels} levels; give one per level",
            )
        uses_var = [s.name for s in (self.box_loss, *self.extra_losses.values()) if s.accepts("pred_log_var")]
        if uses_var and outputs.box_log_var is None:
            raise ConfigError(
                "model.box_uncertainty",
                f"loss {uses_var[0]!r} needs predicted box variances, but the model has none; "
                "set model.box_uncertainty: true",
            )

    @staticmethod
    def _valid_priors(assignment: Assignment, pos_flat: Tensor, batch_size: int, num_priors: int,
                      device: torch.device) -> Tensor:
        """Tensor[B, P] bool: priors that take part in dense (objectness / background) losses."""
        valid = torch.ones(batch_size, num_priors, dtype=torch.bool, device=device)
        if assignment.ignore is not None:
            valid &= ~assignment.ignore.to(device)
        if assignment.negative is not None:
            keep = assignment.negative.to(device).reshape(-1).clone()  # (B * P,)
            keep[pos_flat] = True
            valid &= keep.view(batch_size, num_priors)
        return valid

    def _pair_term(self, spec: LossSpec, pred: Tensor, target_boxes: Tensor, outputs: HeadOutputs, b: Tensor,
                   p: Tensor, stride: Tensor, level: Tensor, num_levels: int, weight: Tensor | None) -> Tensor:
        """A box-style loss on the positive pairs (grid units), normalised per level: Tensor[] scalar."""
        kwargs: dict[str, Any] = {}
        if spec.accepts("pred_log_var"):
            kwargs["pred_log_var"] = outputs.box_log_var[b, p]  # (M, 4), grid-cell units like the boxes
        if spec.accepts("image_size"):
            kwargs["image_size"] = self.image_size / stride[:, 0]  # (M,)
        per_pair = spec(pred, target_boxes, reduction="none", **kwargs)  # (M,)
        if per_pair.shape != pred.shape[:1]:
            raise ValueError(f"box loss {spec.name!r} returned shape {tuple(per_pair.shape)}, expected "
                             f"({pred.shape[0]},) with reduction='none'")
        return sum_of_level_means(per_pair, level, num_levels, weight)

    def _objectness(self, outputs: HeadOutputs, pred: Tensor, target_boxes: Tensor, pos_flat: Tensor,
                    valid: Tensor) -> Tensor:
        """lobj before its gain: sum over levels of balance[l] * mean objectness loss of the level."""
        obj = outputs.obj  # (B, P)
        batch_size, num_priors = obj.shape
        with torch.no_grad():
            if self.obj_target == "one":
                value = torch.ones_like(pred[:, 0])  # (M,)
            else:
                value = _SIMILARITY[self.obj_target](pred, target_boxes).clamp(min=0)  # (M,)
            tobj = obj.new_zeros(batch_size * num_priors).scatter_reduce(
                0, pos_flat, value.to(obj.dtype), reduce="amax", include_self=True
            ).view(batch_size, num_priors)  # (B, P); a duplicated prior keeps its highest value
        ranking = is_ranking_loss(self.obj_loss)
        offsets = outputs.priors.level_offsets
        total = obj.new_zeros(())
        for lvl in range(outputs.priors.num_levels):
            span = slice(offsets[lvl], offsets[lvl + 1])
            logits, target, keep = obj[:, span], tobj[:, span], valid[:, span]  # (B, P_l) each
            if ranking:
                term = self.obj_loss(logits[keep], target[keep], reduction="none")
            else:
                per_prior = self.obj_loss(logits, target, reduction="none")  # (B, P_l)
                term = torch.where(keep, per_prior, 0).sum() / keep.sum().clamp(min=1)
            total = total + term * self.level_balance[lvl]
        return total

    def _classification(self, outputs: HeadOutputs, gt_class: Tensor, b: Tensor, p: Tensor, level: Tensor,
                        valid: Tensor, weight: Tensor | None) -> Tensor:
        """lcls before its gain (see the class docstring for the three modes)."""
        cls = outputs.cls  # (B, P, C)
        num_classes = cls.shape[-1]
        if is_ranking_loss(self.cls_loss):
            target = torch.zeros_like(cls)
            target[b, p, gt_class] = 1.0  # (B, P, C) one-hot (multi-hot for a prior in pairs of two classes)
            return self.cls_loss(cls[valid], target[valid], reduction="none")  # (V, C) -> scalar
        eps = self.label_smoothing
        pos_value, neg_value = 1.0 - 0.5 * eps, 0.5 * eps
        if self.obj_loss is not None:
            if num_classes == 1:  # YOLOv5 computes no class loss for a single class
                return cls.sum() * 0
            one_hot = F.one_hot(gt_class, num_classes).to(cls.dtype)  # (M, C)
            target = one_hot * (pos_value - neg_value) + neg_value
            per_pair = self.cls_loss(cls[b, p], target, reduction="none")  # (M, C), or (M,) for ce
            return sum_of_level_means(per_pair, level, outputs.priors.num_levels, weight)
        target = torch.full_like(cls, neg_value)
        target[b, p, gt_class] = pos_value  # (B, P, C)
        per_element = self.cls_loss(cls, target, reduction="none")  # (B, P, C), or (B, P) for ce
        mask = valid if per_element.dim() == 2 else valid[..., None]
        return torch.where(mask, per_element, 0).sum() / max(b.numel(), 1)  # avg_factor: number of pairs
