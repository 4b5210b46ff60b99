"""Dense detect heads (YOLOv5's ``Detect`` and its variants), returning raw outputs only.

Letter convention (see ``detector/structures.py``): ``B`` images, ``A`` priors per cell at one level (anchors,
or 1 for point priors), ``H, W`` one level's size, ``C`` classes, ``P`` priors over all levels, ``R`` raw box
values per prior (4, or ``4 * bins`` for a distribution head) and ``K`` the channels per prior, laid out as
:class:`ChannelLayout` says: ``(box_0 .. box_{R-1}, [obj], cls_0 .. cls_{C-1}, [background], [lv_0 .. lv_3],
[quality])``:

* ``obj`` with ``objectness`` (YOLO: ``K = 5 + C`` by default);
* ``background`` with ``background`` (SSD: a softmax over ``C + 1`` classes, the last one background);
* 4 log-variance channels ``(x1, y1, x2, y2)`` with ``box_uncertainty``;
* one quality logit with ``quality`` (FCOS centerness).

The heads of the config table (``detector.build.HEADS``) are this one module with different layouts; the head
never decodes: boxes stay raw for a box coder (``detector.ops.coders``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detector.models.heads.split import LevelRows, SplitChannels
from detector.structures import HeadOutputs, Priors

NUM_LOG_VAR = 4


@dataclass(frozen=True)
class ChannelLayout:
    """Where each output lives among the ``K`` channels of one prior."""

    num_classes: int
    box_outputs: int = 4
    objectness: bool = True
    background: bool = False
    box_uncertainty: bool = False
    quality: bool = False

    @property
    def obj_index(self) -> int:
        return self.box_outputs

    @property
    def cls_slice(self) -> slice:
        """Classes, and the background channel last when there is one."""
        start = self.box_outputs + int(self.objectness)
        return slice(start, start + self.num_classes + int(self.background))

    @property
    def log_var_slice(self) -> slice:
        start = self.cls_slice.stop
        return slice(start, start + (NUM_LOG_VAR if self.box_uncertainty else 0))

    @property
    def size(self) -> int:
        """``K``."""
        return self.log_var_slice.stop + int(self.quality)


def channels_per_anchor(num_classes: int, box_uncertainty: bool = False, objectness: bool = True,
                        background: bool = False, quality: bool = False, box_outputs: int = 4) -> int:
    """``K = R + [1] + C + [1] + [4] + [1]``: box, objectness, classes, background, log-variances, quality."""
    return ChannelLayout(num_classes, box_outputs, objectness, background, box_uncertainty, quality).size


@torch.no_grad()
def init_yolov5_detect_bias(
    conv: nn.Conv2d,
    num_anchors: int,
    num_classes: int,
    stride: float,
    *,
    box_uncertainty: bool = False,
    objects_per_image: float = 8.0,
    image_size: float = 640.0,
    class_frequency: float = 0.6,
    layout: ChannelLayout | None = None,
) -> None:
    """YOLOv5's ``Detect._initialize_biases`` for one level's ``conv`` (out channels ``A * K``), in place.

    The bias is viewed as ``(A, K)`` (the head's channel order, ``layout``; default YOLOv5's), and:
      * obj:  ``+= log(objects_per_image / (image_size / stride) ** 2)``, i.e. a prior of about 8 objects
        per 640-pixel image spread over the level's cells (stride 8: ``log(8 / 6400) = -6.6846``);
      * cls:  ``+= log(class_frequency / (C - 0.99))`` (80 classes: ``log(0.6 / 79.01) = -4.8805``), for
        heads with or without objectness;
      * background (softmax heads): ``log(99 * C)``, so the background starts at probability 0.99;
      * box:  unchanged (PyTorch's default uniform init, as in YOLOv5);
      * log-variance (box uncertainty only): set to 0, so the initial predicted variance is about 1.
    """
    layout = layout or ChannelLayout(num_classes, box_uncertainty=box_uncertainty)
    k = layout.size
    if conv.bias is None or conv.bias.numel() != num_anchors * k:
        raise ValueError(f"init_yolov5_detect_bias: conv needs a bias of {num_anchors} * {k} channels")
    b = conv.bias.view(num_anchors, k)  # (A * K,) -> (A, K), shares storage with conv.bias
    classes = layout.cls_slice
    if layout.objectness:
        b[:, layout.obj_index] += math.log(objects_per_image / (image_size / stride) ** 2)
    if layout.background:
        b[:, classes.stop - 1] = math.log(99.0 * num_classes)
        classes = slice(classes.start, classes.stop - 1)
    else:
        b[:, classes] += math.log(class_frequency / max(num_classes - 0.99, 0.01))
    b[:, layout.log_var_slice] = 0.0


class YOLOv5Head(nn.Module):
    """One 1x1 convolution per level to ``A * K`` channels, with YOLOv5's bias initialisation.

    Args:
        in_channels: channels of each input level.
        num_classes: ``C``.
        num_anchors: ``A`` per level (an int for all levels; 1 for point priors).
        strides: stride in pixels of each level (only used to initialise the objectness bias).
        box_uncertainty: add 4 log-variance channels per anchor (KL loss, He et al. 2019).
        objectness: emit an objectness logit per anchor (YOLO); without it classes are scored alone.
        background: add a background class channel, scored with a softmax (SSD).
        quality: add a localisation-quality logit (FCOS centerness).
        box_outputs: raw box values per prior, ``R`` (the coder's ``num_outputs``: 4, or ``4 * bins`` for DFL).
    """

    lazy_class_rows = False  # class logits read only at the criterion's pairs (detector.build.link_class_rows)

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        num_anchors: int | Sequence[int],
        strides: Sequence[int],
        box_uncertainty: bool = False,
        objectness: bool = True,
        background: bool = False,
        quality: bool = False,
        box_outputs: int = 4,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"YOLOv5Head: num_classes must be >= 1, got {num_classes}")
        levels = len(in_channels)
        anchors = [int(num_anchors)] * levels if isinstance(num_anchors, int) else [int(a) for a in num_anchors]
        if len(anchors) != levels or len(strides) != levels:
            raise ValueError(
                f"YOLOv5Head: in_channels ({levels} levels), num_anchors ({len(anchors)}) and strides "
                f"({len(strides)}) must have one entry per level"
            )
        self.num_classes = int(num_classes)
        self.num_anchors = anchors
        self.layout = ChannelLayout(self.num_classes, int(box_outputs), bool(objectness), bool(background),
                                    bool(box_uncertainty), bool(quality))
        self.box_uncertainty = self.layout.box_uncertainty
        self.channels_per_anchor = self.layout.size
        self.convs = nn.ModuleList(
            nn.Conv2d(c, a * self.channels_per_anchor, kernel_size=1) for c, a in zip(in_channels, anchors)
        )
        for conv, a, s in zip(self.convs, anchors, strides):
            init_yolov5_detect_bias(conv, a, self.num_classes, float(s), layout=self.layout)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """features: per level Tensor[B, C_l, H, W] -> per level Tensor[B, A, H, W, K] (raw, undecoded)."""
        if len(features) != len(self.convs):
            raise ValueError(f"YOLOv5Head: expected {len(self.convs)} feature levels, got {len(features)}")
        out = []
        for x, conv, a in zip(features, self.convs, self.num_anchors):
            y = conv(x)  # (B, A*K, H, W)
            b, _, h, w = y.shape
            y = y.view(b, a, self.channels_per_anchor, h, w)  # (B, A, K, H, W)
            out.append(y.permute(0, 1, 3, 4, 2))  # (B, A, H, W, K)
        return out

    def flatten(self, levels: Sequence[Tensor], priors: Priors) -> HeadOutputs:
        """Per-level outputs of :meth:`forward` -> HeadOutputs; see :func:`flatten_level_outputs` (class logits
        left in place in training when ``lazy_class_rows``, set by :func:`detector.build.link_class_rows`)."""
        return flatten_level_outputs(levels, priors, self.num_classes, layout=self.layout,
                                     lazy_cls=self.lazy_class_rows and self.training)


def flatten_level_outputs(
    levels: Sequence[Tensor], priors: Priors, num_classes: int, box_uncertainty: bool = False,
    layout: ChannelLayout | None = None, lazy_cls: bool = False,
) -> HeadOutputs:
    """Concatenate per-level raw outputs into HeadOutputs in the flat prior order of ``priors``.

    Args:
        levels: per level Tensor[B, A, H, W, K] with ``K = layout.size`` (default: YOLOv5's layout).
        priors: priors whose ``level_shapes`` are the ``(A, H, W)`` of ``levels``.
        lazy_cls: for a criterion that reads class logits only at its pairs (``class_rows_only``) and a head with
            objectness: ``cls`` is not copied; ``HeadOutputs.class_rows`` reads the pairs' rows from the levels
            (``cls`` itself is then a NaN placeholder of the right shape).

    Returns:
        HeadOutputs with ``box`` Tensor[B, P, R] raw, ``obj`` Tensor[B, P] logits (None without
        objectness), ``cls`` Tensor[B, P, C] logits (``C + 1`` with the background channel last),
        ``box_log_var`` Tensor[B, P, 4] or None, ``quality`` Tensor[B, P] or None. Flat index of anchor ``a``
        at cell ``(gy, gx)`` of level ``l`` is ``level_offsets[l] + (a * H + gy) * W + gx``. Dtype is that of
        ``levels`` (float16 / bfloat16 under autocast).
    """
    layout = layout or ChannelLayout(num_classes, box_uncertainty=box_uncertainty)
    k = layout.size
    got = [tuple(t.shape[1:4]) for t in levels]
    if got != [tuple(s) for s in priors.level_shapes] or any(t.dim() != 5 or t.shape[-1] != k for t in levels):
        raise ValueError(
            f"flatten_level_outputs: level outputs of shapes {[tuple(t.shape) for t in levels]} do not match the "
            f"priors' (A, H, W) {priors.level_shapes} with K = {k} channels per anchor ({layout})"
        )
    names, slices = ["box"], [slice(0, layout.box_outputs)]
    if layout.objectness:
        names.append("obj"), slices.append(slice(layout.obj_index, layout.obj_index + 1))
    names.append("cls"), slices.append(layout.cls_slice)
    if layout.box_uncertainty:
        names.append("box_log_var"), slices.append(layout.log_var_slice)
    if layout.quality:
        names.append("quality"), slices.append(slice(k - 1, k))
    lazy = tuple(lazy_cls and name == "cls" and layout.objectness and not layout.background for name in names)
    parts = dict(zip(names, SplitChannels.apply(tuple(slices), lazy, *levels)))  # name -> (B, P, k)
    return HeadOutputs(
        box=parts["box"],  # (B, P, R)
        obj=parts["obj"][..., 0] if layout.objectness else None,  # (B, P)
        cls=parts["cls"],  # (B, P, C) or (B, P, C + 1)
        box_log_var=parts.get("box_log_var"),  # (B, P, 4)
        quality=parts["quality"][..., 0] if layout.quality else None,  # (B, P)
        priors=priors,
        background=layout.background,
        sparse_row_grad=True,  # SplitChannels' backward takes the sparse rows of detector.ops.rows.gather_rows
        lazy_cls=LevelRows(tuple(levels), layout.cls_slice, parts["cls"]) if any(lazy) else None,
    )
