"""Small dataclasses passed between stages of the pipeline.

Letter convention used in shape comments across the package:
    B  images in a batch          P  priors over all levels (flattened)
    C  classes                    n  ground-truth rows in a collated batch
    M  positive (prior, gt) pairs A  anchors per cell at one level
    G  ground truths per image after padding (the most in any image of the batch)
    H, W  feature-map height and width at one level

Box format: unless a docstring says otherwise, boxes are ``(x1, y1, x2, y2)`` in pixels of the
network input image (after letterbox / mosaic), with ``0 <= x1 <= x2`` and ``0 <= y1 <= y2``.

Collated targets are one flat tensor ``targets (Tensor[n, 6]) = (image_index, class, x1, y1, x2, y2)``
(float32; ``image_index`` and ``class`` hold integral values; ``class`` is the contiguous index 0..C-1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from detector.ops.rows import gather_rows


@dataclass
class Priors:
    """Priors (anchors or points) of all feature levels, flattened in level order.

    Within level ``l`` the order is ``(A, H, W)`` (anchor major, then row, then column), so the flat
    index of anchor ``a`` at cell ``(gy, gx)`` is ``level_offsets[l] + (a * H + gy) * W + gx``.

    Attributes:
        grid (Tensor[P, 2]): integer cell coordinates ``(gx, gy)`` of each prior, as float.
        strides (Tensor[P]): stride in pixels of the level of each prior.
        anchors (Tensor[P, 2] | None): anchor ``(w, h)`` in pixels; None for point priors (FCOS).
        level (Tensor[P]): level index (long) of each prior.
        anchor_id (Tensor[P]): index of the anchor within its level (long); 0 for point priors.
        level_shapes (list[tuple[int, int, int]]): ``(A, H, W)`` per level.
        level_anchors (list[Tensor[A, 2]] | None): the anchors of each level in pixels.
    """

    grid: Tensor
    strides: Tensor
    anchors: Tensor | None
    level: Tensor
    anchor_id: Tensor
    level_shapes: list[tuple[int, int, int]]
    level_anchors: list[Tensor] | None = None

    @property
    def num_levels(self) -> int:
        return len(self.level_shapes)

    @property
    def level_offsets(self) -> list[int]:
        """Flat index of the first prior of each level; length ``num_levels + 1``."""
        offsets = [0]
        for a, h, w in self.level_shapes:
            offsets.append(offsets[-1] + a * h * w)
        return offsets

    @property
    def centers(self) -> Tensor:
        """Tensor[P, 2]: cell centre ``(x, y)`` in pixels."""
        return (self.grid + 0.5) * self.strides[:, None]

    def __len__(self) -> int:
        return self.grid.shape[0]


@dataclass
class HeadOutputs:
    """Raw head outputs flattened over all priors (see :class:`Priors` for the order).

    Which optional outputs a head emits says how it is trained and scored; :func:`detection_scores` turns
    them into per-class probabilities the same way for every head.

    Attributes:
        box (Tensor[B, P, R]): raw box regression, decoded into xyxy pixels by a box coder (``R = 4`` for
            the grid, delta and ltrb coders; ``R = 4 * bins`` for a distribution (DFL) head).
        cls (Tensor[B, P, C] or Tensor[B, P, C + 1]): class logits; with ``background`` the last channel is
            the background class and the logits are scored by a softmax over all ``C + 1``.
        obj (Tensor[B, P] | None): objectness logits; None for heads without objectness.
        priors (Priors): the priors the outputs are laid out over (constants, not learnt).
        box_log_var (Tensor[B, P, 4] | None): predicted log-variance of each decoded xyxy
            coordinate, in units of the prior's stride (grid cells, so a zero output means a standard
            deviation of one cell on every level; add ``2 * ln(stride)`` for pixels) (KL loss, He et al.
            2019); None unless the head predicts uncertainty.
        quality (Tensor[B, P] | None): logits of a localisation-quality branch (FCOS centerness); the
            score becomes ``sqrt(p_cls * sigmoid(quality))``.
        background (bool): ``cls`` has a background channel (softmax head, SSD).
        one_to_one (HeadOutputs | None): in training, the outputs of a second head trained with one-to-one
            assignment (NMS-free training, :mod:`detector.models.heads.dual`); None otherwise.
        sparse_row_grad (bool): ``box`` and ``cls`` take a sparse gradient from
            :func:`detector.ops.rows.gather_rows` (True for heads flattened by
            :func:`~detector.models.heads.yolo.flatten_level_outputs`, whose backward writes such rows straight into
            the convolution's gradient); False: plain tensors, which get the usual dense gradient.
        lazy_cls (LevelRows | None): in training, for a criterion that reads class logits only at its pairs, the
            head's levels the rows are read from (:meth:`class_rows`); ``cls`` is then a NaN placeholder of the right
            shape, never copied (:func:`~detector.models.heads.yolo.flatten_level_outputs`).
    """

    box: Tensor
    cls: Tensor
    obj: Tensor | None
    priors: Priors
    box_log_var: Tensor | None = None
    quality: Tensor | None = None
    background: bool = False
    one_to_one: "HeadOutputs | None" = None
    sparse_row_grad: bool = False
    lazy_cls: Any = None

    def class_rows(self, b: Tensor, p: Tensor) -> Tensor:
        """b, p (Tensor[M]) -> Tensor[M, C]: ``cls[b, p]`` in the dtype of ``box`` (float32 after
        ``float32_outputs``), with the sparse gradient of ``sparse_row_grad``; read from the head's levels when
        ``lazy_cls`` holds them (:class:`detector.models.heads.split.LevelRows`)."""
        if self.lazy_cls is not None:
            return self.lazy_cls.gather(b, p).to(self.box.dtype)
        return gather_rows(self.cls, b, p, self.sparse_row_grad)

    @property
    def batch_size(self) -> int:
        return self.box.shape[0]

    @property
    def num_classes(self) -> int:
        """C, the object classes (the background channel of a softmax head is not counted)."""
        return self.cls.shape[-1] - int(self.background)


def detection_scores(outputs: HeadOutputs) -> Tensor:
    """Per-class detection probabilities the way each head is trained: Tensor[B, P, C].

    * sigmoid head: ``sigmoid(cls)``; softmax head (``background``): ``softmax(cls)`` without its last
      (background) channel;
    * times ``sigmoid(obj)`` when the head has objectness (YOLO);
    * ``sqrt(p * sigmoid(quality))`` when it has a quality branch (FCOS centerness).
    """
    if outputs.background:
        scores = outputs.cls.softmax(-1)[..., :-1]  # (B, P, C)
    else:
        scores = outputs.cls.sigmoid()  # (B, P, C)
    if outputs.obj is not None:
        scores = scores * outputs.obj.sigmoid()[..., None]
    if outputs.quality is not None:
        scores = (scores * outputs.quality.sigmoid()[..., None]).sqrt()
    return scores


class Predictions:
    """Detached predictions an assigner may look at (SimOTA, TAL, YOLOv3's ignore rule).

    Attributes:
        boxes (Tensor[B, P, 4]): decoded xyxy boxes in pixels, detached.
        scores (Tensor[B, P, C]): per-class probabilities (:func:`detection_scores`), detached; computed on first
            use when built ``from_outputs`` (YOLOv3's ignore rule reads only the boxes).
    """

    def __init__(self, boxes: Tensor, scores: Tensor | None = None, outputs: HeadOutputs | None = None):
        if scores is None and outputs is None:
            raise ValueError("Predictions needs scores or the (detached) outputs to score")
        self.boxes, self._scores, self._outputs = boxes, scores, outputs

    @property
    def scores(self) -> Tensor:
        if self._scores is None:
            self._scores = detection_scores(self._outputs)
        return self._scores


@dataclass
class Assignment:
    """Result of every assigner: which priors learn which ground-truth boxes.

    Positives are listed as pairs, so a prior may be matched to more than one ground truth
    (YOLOv5 keeps such duplicates). Everything that is neither positive nor ignored is negative,
    unless ``negative`` narrows it (a sampler: random 1:1 for RPN, hard-negative mining for SSD).

    Attributes:
        batch_index (Tensor[M]): image of each positive pair (long).
        prior_index (Tensor[M]): flat prior index of each positive pair (long), in ``[0, P)``.
        gt_index (Tensor[M]): row of ``targets`` (Tensor[n, 6]) matched by each pair (long).
        ignore (Tensor[B, P] | None): bool, priors excluded from the objectness / background loss.
        negative (Tensor[B, P] | None): bool, the negatives to use; None means "all the rest".
        weight (Tensor[M] | None): optional per-pair weight of the box terms (for example FCOS centerness).
        score (Tensor[M] | None): soft classification target of each pair in ``[0, 1]`` (IoU for VFL / QFL,
            TAL's normalised alignment); None means a hard target of 1.
        extras (dict[str, Tensor]): assigner-specific tensors (e.g. ``"centerness"`` targets, Tensor[M]).
    """

    batch_index: Tensor
    prior_index: Tensor
    gt_index: Tensor
    ignore: Tensor | None = None
    negative: Tensor | None = None
    weight: Tensor | None = None
    score: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_pos(self) -> int:
        return int(self.batch_index.numel())

    def positive_mask(self, batch_size: int, num_priors: int) -> Tensor:
        """Tensor[B, P] bool: priors in at least one positive pair."""
        mask = torch.zeros(batch_size, num_priors, dtype=torch.bool, device=self.batch_index.device)
        mask[self.batch_index, self.prior_index] = True
        return mask

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> "Assignment":
        z = torch.zeros(0, dtype=torch.long, device=device)
        return Assignment(batch_index=z, prior_index=z.clone(), gt_index=z.clone())
