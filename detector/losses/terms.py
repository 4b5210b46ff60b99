"""The loss terms of :class:`~detector.losses.criterion.DetectionCriterion`, each a function of the positive pairs,
the head's outputs and the term's own settings, and the helpers they share.

* :func:`gather_pairs`: the ``M`` positive pairs indexed once (:class:`Pairs`), only their boxes decoded.
* :func:`kept_priors`: Tensor[B, P] bool, the priors of the dense terms; :func:`background_loss`: each prior's loss
  as a negative (what a hard-negative sampler ranks).
* one function a term, each returning its recipe-reduced value, a Tensor[] scalar before the term's weight:
  :func:`pair_box_term` (``box`` and the extra box-style terms), :func:`obj_term` (with
  :func:`objectness_target`), :func:`cls_term` (with :func:`soft_score`), :func:`quality_term`, :func:`dfl_term`.

What each term computes is in :mod:`detector.losses.criterion`'s docstring; ``reduction`` is the recipe
(:mod:`detector.losses.recipes`) and ``norm`` its :class:`~detector.losses.recipes.Normalizers`. Shape letters as
in :mod:`detector.structures`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.assigners.fcos import fcos_centerness
from detector.errors import ConfigError
from detector.losses.ranking import ap_loss, dr_loss
from detector.losses.recipes import Normalizers
from detector.losses.spec import LossSpec
from detector.ops.boxes import aligned_ciou, aligned_iou
from detector.ops.rows import gather_rows
from detector.structures import Assignment, HeadOutputs

_SIMILARITY = {"ciou": aligned_ciou, "iou": aligned_iou}


def is_ranking_loss(spec: LossSpec) -> bool:
    """Whether ``spec`` ranks all its inputs and returns a scalar (``ap``, ``dr``) instead of per-element values."""
    return spec.fn in (ap_loss, dr_loss)


@dataclasses.dataclass
class Pairs:
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


# ---------------------------------------------------------------------------------------------- helpers
def gather_pairs(coder: Any, outputs: HeadOutputs, targets: Tensor, assignment: Assignment) -> Pairs:
    """Index the positive pairs once; decode only their M boxes (``coder.decode_at``)."""
    priors = outputs.priors
    b, p, g = assignment.batch_index, assignment.prior_index, assignment.gt_index
    stride = priors.strides[p].to(outputs.box.dtype)[:, None]  # (M, 1)
    raw = gather_rows(outputs.box, b, p, outputs.sparse_row_grad)  # (M, R); sparse gradient (detector.ops.rows)
    pred = coder.decode_at(raw, priors, p) / stride  # (M, 4) grid units
    return Pairs(b=b, p=p, g=g, level=priors.level[p], stride=stride, raw=raw, pred=pred,
                 target=targets[g, 2:6] / stride, gt_class=targets[g, 1].long())


def kept_priors(assignment: Assignment, batch_size: int, num_priors: int, device: torch.device) -> Tensor:
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
def background_loss(outputs: HeadOutputs, *, obj_loss: LossSpec | None, cls_loss: LossSpec) -> Tensor:
    """Tensor[B, P]: each prior's loss if it were a negative (what hard-negative mining ranks)."""
    if outputs.background:  # CE against the background channel; classes on dim 1 (the head's (B, C, P) buffer)
        return -F.log_softmax(outputs.cls.movedim(-1, 1), 1)[:, -1]  # (B, P); 3x faster than logsumexp here
    if outputs.obj is not None:
        return obj_loss(outputs.obj, torch.zeros_like(outputs.obj), reduction="none")
    return cls_loss(outputs.cls, torch.zeros_like(outputs.cls), reduction="none").sum(-1)


# ---------------------------------------------------------------------------------------------- terms
def pair_box_term(pairs: Pairs, outputs: HeadOutputs, weight: Tensor | None, norm: Normalizers, *, loss: LossSpec,
                  reduction: Any, image_size: int, coder: Any = None) -> Tensor:
    """A box-style loss on the positive pairs, reduced by the recipe: Tensor[] scalar.

    With ``coder`` (``box_space="encoded"``) the loss compares the raw regression with ``coder``'s encoding of the
    gt; without, the decoded boxes with the gt boxes, both in grid units.
    """
    if coder is not None:
        pred, target = pairs.raw, coder.encode_at(pairs.target * pairs.stride, outputs.priors, pairs.p)
    else:
        pred, target = pairs.pred, pairs.target
    kwargs: dict[str, Any] = {}
    if loss.accepts("pred_log_var"):
        kwargs["pred_log_var"] = outputs.box_log_var[pairs.b, pairs.p]  # (M, 4), grid-cell units like the boxes
    if loss.accepts("image_size"):
        kwargs["image_size"] = image_size / pairs.stride[:, 0]  # (M,)
    per_pair = loss(pred, target, reduction="none", **kwargs)  # (M,)
    if per_pair.shape != pred.shape[:1]:
        raise ValueError(f"box loss {loss.name!r} returned shape {tuple(per_pair.shape)}, expected "
                         f"({pred.shape[0]},) with reduction='none'")
    return reduction.pairs(per_pair, pairs.level, outputs.priors.num_levels, weight, norm)


@torch.no_grad()
def objectness_target(pairs: Pairs, obj: Tensor, kind: str) -> Tensor:
    """Tensor[B, P] detached, like ``obj``: 0, and at each positive prior the similarity ``kind`` (``ciou``,
    ``iou``, clamped at 0) of its pair's decoded box with the gt, or 1 (``one``); a prior in several pairs keeps
    its highest value."""
    if kind == "one":
        value = torch.ones_like(pairs.pred[:, 0])  # (M,)
    else:
        value = _SIMILARITY[kind](pairs.pred, pairs.target).clamp(min=0)  # (M,)
    return obj.new_zeros(obj.numel()).scatter_reduce(
        0, pairs.b * obj.shape[1] + pairs.p, value.to(obj.dtype), reduce="amax", include_self=True
    ).view_as(obj)  # (B, P); a prior in several pairs keeps its highest value


def obj_term(pairs: Pairs, outputs: HeadOutputs, keep: Tensor, norm: Normalizers, *, loss: LossSpec, target: str,
             reduction: Any) -> Tensor:
    """``obj``: ``loss`` over the kept priors against :func:`objectness_target` (a ranking loss: one a level)."""
    obj = outputs.obj  # (B, P)
    tobj = objectness_target(pairs, obj, target)  # (B, P)
    offsets = outputs.priors.level_offsets
    if is_ranking_loss(loss):  # one ranking per level, each a normalised scalar
        per_level = []
        for lvl in range(outputs.priors.num_levels):
            span = slice(offsets[lvl], offsets[lvl + 1])
            kept = keep[:, span]
            per_level.append(loss(obj[:, span][kept], tobj[:, span][kept], reduction="none"))
        return reduction.combine_levels(per_level, balance=True)
    values = loss(obj, tobj, reduction="none")  # (B, P)
    return reduction.dense(values, keep, offsets, True, norm)


def soft_score(pairs: Pairs, assignment: Assignment, cls_target: str) -> Tensor | None:
    """Tensor[M] class target of each pair in [0, 1], or None for hard targets."""
    if cls_target == "iou":
        return aligned_iou(pairs.pred.detach(), pairs.target).clamp(min=0)
    return assignment.score


def cls_term(pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, keep: Tensor, norm: Normalizers, *,
             loss: LossSpec, reduction: Any, label_smoothing: float, cls_target: str) -> Tensor:
    """``cls``: on the pairs (heads with objectness), or over the kept priors (sigmoid, softmax, or an assigner's
    dense heat map); a ranking loss ranks the class logits of all kept priors."""
    cls, num_classes = outputs.cls, outputs.num_classes  # (B, P, C) or (B, P, C + 1)
    soft = soft_score(pairs, assignment, cls_target)  # (M,) or None
    pos_value, neg_value = 1.0 - 0.5 * label_smoothing, 0.5 * label_smoothing
    if is_ranking_loss(loss):
        target = torch.zeros_like(cls)
        target[pairs.b, pairs.p, pairs.gt_class] = 1.0  # (B, P, C) one-hot, multi-hot for a shared prior
        return loss(cls[keep], target[keep], reduction="none")
    if outputs.background:  # softmax over C + 1: negatives learn the background channel
        label = torch.full(cls.shape[:2], num_classes, dtype=torch.long, device=cls.device)  # (B, P)
        label[pairs.b, pairs.p] = pairs.gt_class  # class indices: no (B, P, C + 1) one-hot is built
        smoothing = {"label_smoothing": label_smoothing} if label_smoothing else {}
        if assignment.negative is None:
            values = loss(cls, label, reduction="none", **smoothing)  # (B, P)
        else:  # a sampler kept a few priors (SSD: 3 negatives per positive): the softmax of those only
            b, p = keep.nonzero(as_tuple=True)  # (N,) each
            kept = loss(cls[b, p], label[b, p], reduction="none", **smoothing)  # (N,)
            values = kept.new_zeros(cls.shape[:2]).index_put((b, p), kept)  # (B, P), zero off the kept priors
        return reduction.dense(values, keep, outputs.priors.level_offsets, False, norm)
    if outputs.obj is not None:  # YOLO: negatives are the objectness term's; classes on the pairs
        if num_classes == 1:  # YOLOv5 computes no class loss for a single class: a zero still on the graph
            return outputs.class_rows(pairs.b[:0], pairs.p[:0]).sum()
        one_hot = F.one_hot(pairs.gt_class, num_classes).to(cls.dtype)  # (M, C)
        if soft is not None:  # soft target at the class (YOLOX: one-hot x IoU)
            one_hot = one_hot * soft.to(cls.dtype)[:, None]
        target = one_hot * (pos_value - neg_value) + neg_value
        rows = outputs.class_rows(pairs.b, pairs.p)  # (M, C), a sparse gradient
        per_pair = loss(rows, target, reduction="none")  # (M, C)
        return reduction.pairs(per_pair, pairs.level, outputs.priors.num_levels, assignment.weight, norm)
    dense = assignment.extras.get("heatmap")  # Tensor[B, P, C]: an assigner's own dense target (CenterNet)
    if dense is not None:
        values = loss(cls, dense.to(device=cls.device, dtype=cls.dtype), reduction="none")  # (B, P, C)
        return reduction.dense(values, keep, outputs.priors.level_offsets, False, norm)
    score = torch.ones_like(pairs.pred[:, 0]) if soft is None else soft.to(cls.dtype)
    target = torch.full_like(cls, neg_value)
    target[pairs.b, pairs.p, pairs.gt_class] = score * (pos_value - neg_value) + neg_value  # (B, P, C)
    values = loss(cls, target, reduction="none")  # (B, P, C)
    return reduction.dense(values, keep, outputs.priors.level_offsets, False, norm)


def quality_term(pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers, *, loss: LossSpec,
                 reduction: Any) -> Tensor:
    """``quality``: ``loss`` of the quality branch at the pairs against the assigner's or FCOS's centerness."""
    if outputs.quality is None:
        raise ConfigError("loss.weights.quality", "the head has no quality (centerness) branch; remove the weight "
                                                  "or use a head with quality: true")
    target = assignment.extras.get("centerness")
    if target is None:  # FCOS's definition from the prior centre and the gt (ATSS trains the same branch)
        centre = outputs.priors.centers[pairs.p] / pairs.stride  # (M, 2) grid units, like pairs.target
        ltrb = torch.cat((centre - pairs.target[:, :2], pairs.target[:, 2:] - centre), 1).clamp(min=1e-6)  # (M, 4)
        target = fcos_centerness(ltrb)  # (M,)
    values = loss(outputs.quality[pairs.b, pairs.p], target.to(outputs.quality.dtype), reduction="none")  # (M,)
    return reduction.pairs(values, pairs.level, outputs.priors.num_levels, None, norm)


def dfl_term(pairs: Pairs, outputs: HeadOutputs, assignment: Assignment, norm: Normalizers, *, coder: Any,
             reduction: Any) -> Tensor:
    """``dfl``: Distribution Focal Loss of the pairs' bin logits against ``coder``'s encoding of the gt."""
    from detector.losses.dfl import distribution_focal_loss

    bins = getattr(coder, "bins", None)
    if bins is None:
        raise ConfigError("loss.weights.dfl", f"needs a distribution coder (model.coder: dfl), got {coder!r}")
    target = coder.encode_at(pairs.target * pairs.stride, outputs.priors, pairs.p)  # (M, 4) in bins
    values = distribution_focal_loss(pairs.raw, target, reduction="none")  # (M,)
    return reduction.pairs(values, pairs.level, outputs.priors.num_levels, assignment.weight, norm)
