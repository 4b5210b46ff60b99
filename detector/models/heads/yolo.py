"""Anchor detect heads (YOLOv5's ``Detect`` and its variants without objectness), returning raw outputs only.

Letter convention (see ``detector/structures.py``): ``B`` images, ``A`` anchors per cell at one level,
``H, W`` one level's size, ``C`` classes, ``P`` priors over all levels, and ``K`` the channels per anchor,
laid out ``(tx, ty, tw, th, [obj], cls_0 .. cls_{C-1}, [background], [lv_0 .. lv_3], [quality])``:

* ``obj`` with ``objectness`` (YOLO: ``K = 5 + C`` by default);
* ``background`` with ``background`` (SSD: a softmax over ``C + 1`` classes, the last one background);
* 4 log-variance channels ``(x1, y1, x2, y2)`` with ``box_uncertainty``;
* one quality logit with ``quality`` (FCOS centerness).

The heads of the config table (``detector.build.HEADS``): ``yolo`` (objectness, sigmoid classes;
YOLOv2/v3/v5 and the RPN recipe), ``retina`` (sigmoid classes, no objectness), ``ssd`` (softmax with a
background class, no objectness) and ``fcos`` (one point per cell, sigmoid classes and centerness).

The head never decodes: boxes stay raw logits for a box coder (``detector.ops.coders.YOLOv5BoxCoder``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detector.structures import HeadOutputs, Priors

NUM_LOG_VAR = 4


def channels_per_anchor(num_classes: int, box_uncertainty: bool = False, objectness: bool = True,
                        background: bool = False, quality: bool = False) -> int:
    """``K = 4 + [1] + C + [1] + [4] + [1]``: box, objectness, classes, background, log-variances, quality."""
    return (4 + int(objectness) + num_classes + int(background) + (NUM_LOG_VAR if box_uncertainty else 0)
            + int(quality))


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
    objectness: bool = True,
    background: bool = False,
    quality: bool = False,
) -> None:
    """YOLOv5's ``Detect._initialize_biases`` for one level's ``conv`` (out channels ``A * K``), in place.

    Heads without objectness get the same class prior; a background channel starts at
    ``log(99 * C)``, so the softmax gives the background 0.99 at the start, as focal-loss style priors do.

    The bias is viewed as ``(A, K)`` (the head's channel order), and:
      * obj:  ``+= log(objects_per_image / (image_size / stride) ** 2)``, i.e. a prior of about 8 objects
        per 640-pixel image spread over the level's cells (stride 8: ``log(8 / 6400) = -6.6846``);
      * cls:  ``+= log(class_frequency / (C - 0.99))`` (80 classes: ``log(0.6 / 79.01) = -4.8805``);
      * box:  unchanged (PyTorch's default uniform init, as in YOLOv5);
      * log-variance (box uncertainty only): set to 0, so the initial predicted variance is about 1.
    """
    k = channels_per_anchor(num_classes, box_uncertainty, objectness, background, quality)
    if conv.bias is None or conv.bias.numel() != num_anchors * k:
        raise ValueError(f"init_yolov5_detect_bias: conv needs a bias of {num_anchors} * {k} channels")
    b = conv.bias.view(num_anchors, k)  # (A * K,) -> (A, K), shares storage with conv.bias
    first_cls = 4 + int(objectness)
    if objectness:
        b[:, 4] += math.log(objects_per_image / (image_size / stride) ** 2)
    if background:
        b[:, first_cls + num_classes] = math.log(99.0 * num_classes)
    else:
        b[:, first_cls : first_cls + num_classes] += math.log(class_frequency / max(num_classes - 0.99, 0.01))
    if box_uncertainty:
        start = first_cls + num_classes + int(background)
        b[:, start : start + NUM_LOG_VAR] = 0.0


class YOLOv5Head(nn.Module):
    """One 1x1 convolution per level to ``A * K`` channels, with YOLOv5's bias initialisation.

    Args:
        in_channels: channels of each input level.
        num_classes: ``C``.
        num_anchors: ``A`` per level (an int for all levels).
        strides: stride in pixels of each level (only used to initialise the objectness bias).
        box_uncertainty: add 4 log-variance channels per anchor (KL loss, He et al. 2019).
        objectness: emit an objectness logit per anchor (YOLO); without it classes are scored alone.
        background: add a background class channel, scored with a softmax (SSD).
        quality: add a localisation-quality logit (FCOS centerness).
    """

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
        self.box_uncertainty = bool(box_uncertainty)
        self.objectness, self.background, self.quality = bool(objectness), bool(background), bool(quality)
        self.channels_per_anchor = channels_per_anchor(self.num_classes, self.box_uncertainty, self.objectness,
                                                       self.background, self.quality)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, a * self.channels_per_anchor, kernel_size=1) for c, a in zip(in_channels, anchors)
        )
        for conv, a, s in zip(self.convs, anchors, strides):
            init_yolov5_detect_bias(conv, a, self.num_classes, float(s), box_uncertainty=self.box_uncertainty,
                                    objectness=self.objectness, background=self.background, quality=self.quality)

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
        """Per-level outputs of :meth:`forward` -> HeadOutputs; see :func:`flatten_level_outputs`."""
        return flatten_level_outputs(levels, priors, self.num_classes, self.box_uncertainty, self.objectness,
                                     self.background, self.quality)


def flatten_level_outputs(
    levels: Sequence[Tensor], priors: Priors, num_classes: int, box_uncertainty: bool = False,
    objectness: bool = True, background: bool = False, quality: bool = False,
) -> HeadOutputs:
    """Concatenate per-level raw outputs into HeadOutputs in the flat prior order of ``priors``.

    Args:
        levels: per level Tensor[B, A, H, W, K] with ``K = channels_per_anchor(num_classes, box_uncertainty)``.
        priors: priors whose ``level_shapes`` are the ``(A, H, W)`` of ``levels``.

    Returns:
        HeadOutputs with ``box`` Tensor[B, P, 4] raw logits, ``obj`` Tensor[B, P] logits (None without
        objectness), ``cls`` Tensor[B, P, C] logits (``C + 1`` with the background channel last),
        ``box_log_var`` Tensor[B, P, 4] or None, ``quality`` Tensor[B, P] or None. Flat index of anchor ``a`` at
        cell ``(gy, gx)`` of level ``l`` is ``level_offsets[l] + (a * H + gy) * W + gx``. Dtype is that of
        ``levels`` (float16 / bfloat16 under autocast).
    """
    k = channels_per_anchor(num_classes, box_uncertainty, objectness, background, quality)
    got = [tuple(t.shape[1:4]) for t in levels]
    if got != [tuple(s) for s in priors.level_shapes] or any(t.dim() != 5 or t.shape[-1] != k for t in levels):
        raise ValueError(
            f"flatten_level_outputs: level outputs of shapes {[tuple(t.shape) for t in levels]} do not match the "
            f"priors' (A, H, W) {priors.level_shapes} with K = {k} channels per anchor "
            f"(num_classes={num_classes}, box_uncertainty={box_uncertainty})"
        )
    flat = torch.cat([t.reshape(t.shape[0], -1, k) for t in levels], dim=1)  # (B, A, H, W, K) -> (B, P, K)
    first_cls = 4 + int(objectness)
    end_cls = first_cls + num_classes + int(background)
    return HeadOutputs(
        box=flat[..., :4],  # (B, P, 4)
        obj=flat[..., 4] if objectness else None,  # (B, P)
        cls=flat[..., first_cls:end_cls],  # (B, P, C) or (B, P, C + 1)
        box_log_var=flat[..., end_cls : end_cls + NUM_LOG_VAR] if box_uncertainty else None,  # (B, P, 4)
        quality=flat[..., -1] if quality else None,  # (B, P)
        priors=priors,
        background=background,
    )
