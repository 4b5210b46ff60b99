"""Schema sections of the network and what it learns from: ``model``, ``loss`` and ``one_to_one``."""
from __future__ import annotations

from dataclasses import dataclass, field

from detector.config.fields import (
    LossSpec, PartSpec, _check_anchors, _check_each, _check_strides, _in_range, _non_empty, _opt,
)


@dataclass
class ModelConfig:
    """The network: architecture name, size and its anchors per level."""

    name: str = _opt("yolov5", check=_non_empty)
    """Backbone and neck; a name of ``detector.build.MODELS`` (``yolov5``: CSP-Darknet + SPPF + PAN)."""
    size: str = _opt("n", choices=("n", "s", "m", "l", "x"))
    """YOLOv5 size: n, s, m, l or x (sets depth and width multiples unless given below)."""
    depth_multiple: float | None = _opt(None, check=_in_range(0.0, lo_open=True))
    """Gain on the number of blocks per stage; None = the value for ``size`` (n/s 0.33, m 0.67, l 1.0, x 1.33)."""
    width_multiple: float | None = _opt(None, check=_in_range(0.0, lo_open=True))
    """Gain on the channel counts; None = the value for ``size`` (n 0.25, s 0.5, m 0.75, l 1.0, x 1.25)."""
    anchors: list[list[float]] | None = _opt(factory=lambda: [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                                                             [116, 90, 156, 198, 373, 326]], check=_check_anchors)
    """Anchor ``(w, h)`` pairs in input pixels, one flat list per level (fine to coarse), same count per level;
    null for a head on point priors (anchor-free)."""
    strides: list[int] = _opt(factory=lambda: [8, 16, 32], check=_check_strides)
    """Stride in pixels of each output level, increasing; one per ``anchors`` entry. A subset of the
    architecture's levels (``[32]`` for YOLOv2's single level) uses only those."""
    box_uncertainty: bool = _opt(False)
    """Also predict a log-variance per box coordinate (``HeadOutputs.box_log_var``), for variance voting."""
    head: PartSpec = field(default_factory=lambda: PartSpec("yolo"))
    """Detection head; a name of ``detector.build.HEADS`` with its parameters (``yolo``: objectness + sigmoid
    classes; ``retina``: sigmoid classes; ``ssd``: softmax with a background class)."""
    coder: PartSpec = field(default_factory=lambda: PartSpec("yolov5"))
    """Box coder; a name of ``detector.build.CODERS`` with its parameters
    (``{name: delta, weights: [10, 10, 5, 5]}``)."""


@dataclass
class LossConfig:
    """The loss terms, their weights and YOLOv5's balancing gains."""

    box: LossSpec = field(default_factory=lambda: LossSpec("ciou"))
    """Box regression loss on positive pairs (pred and target xyxy)."""
    cls: LossSpec = field(default_factory=lambda: LossSpec("bce"))
    """Classification loss on positive pairs (logits vs. one-hot targets)."""
    obj: LossSpec | None = field(default_factory=lambda: LossSpec("bce"))
    """Objectness loss over all priors; null for detectors without objectness."""
    quality: LossSpec = field(default_factory=lambda: LossSpec("bce"))
    """Loss of a head's quality branch (FCOS centerness); used when ``weights`` has ``quality``."""
    weights: dict[str, float] = _opt(factory=lambda: {"box": 0.05, "obj": 1.0, "cls": 0.5},
                                     check=_check_each(_in_range(0.0)))
    """Weight of each loss term in the total (``box``, ``obj``, ``cls``, ``quality``; extra terms such as ``var``)."""
    obj_target: str = _opt("ciou", choices=("ciou", "iou", "one"))
    """Objectness target of a positive: detached CIoU with the gt clamped at 0 (``ciou``, YOLOv5), plain IoU (``iou``) or 1 (``one``)."""
    cls_target: str = _opt("assigner", choices=("assigner", "iou"))
    """Class target of a positive: the assigner's soft score when it gives one, else 1 (``assigner``), or the IoU of
    the pair's predicted box with its gt (``iou``: VFL / QFL / GFL targets for any assigner)."""
    box_space: str = _opt("decoded", choices=("decoded", "encoded"))
    """Box loss on decoded boxes in grid units (``decoded``, IoU family) or on the coder's deltas (``encoded``,
    SSD / R-CNN smooth-L1)."""
    reduction: PartSpec = field(default_factory=lambda: PartSpec("yolov5", {"level_balance": [4.0, 1.0, 0.4],
                                                                            "scale_gains": True}))
    """How values become terms and terms the total; a name of ``detector.build.REDUCTIONS``: ``yolov5``
    (per-level means, ``level_balance``, ``scale_gains``, total times the batch) or ``mean`` (sums over the
    batch divided by ``avg_factor``: ``num_pos`` or ``num_sampled``)."""
    label_smoothing: float = _opt(0.0, check=_in_range(0.0, 1.0, hi_open=True))
    """Class label smoothing epsilon: targets become ``1 - eps/2`` and ``eps/2``."""


@dataclass
class OneToOneConfig:
    """NMS-free training (YOLOv10 / YOLO26): a second head of the same kind learns from a one-to-one assignment."""

    assigner: PartSpec = field(default_factory=lambda: PartSpec("tal", {"topk": 1, "alpha": 0.5, "beta": 6.0}))
    """The one-to-one head's assigner (``detector.build.ASSIGNERS``; YOLOv10: TAL with top-k 1)."""
    many_weight: list[float] = _opt(factory=lambda: [0.8, 0.1], check=lambda v: (
        "must be [start, end], two weights" if len(v) != 2 else _check_each(_in_range(0.0, 1.0))(v)))
    """Weight of the one-to-many loss, ``[first epoch, last epoch]``, linear in between; the one-to-one loss gets
    one minus it (YOLO26: 0.8 -> 0.1)."""
    detach: bool = _opt(True)
    """The one-to-one head sees detached features, so only the one-to-many loss trains backbone and neck
    (YOLOv10)."""
