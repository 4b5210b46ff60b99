"""The decoupled head of YOLOX, FCOS and YOLOv8: separate convolution towers for boxes and classes.

Letter convention as in :mod:`detector.models.heads.yolo`: ``B`` images, ``A`` priors per cell, ``H, W`` one level's
size, ``C`` classes, ``R`` raw box values per prior, ``K`` channels per prior in :class:`ChannelLayout` order.

Per level ``l`` with input ``Tensor[B, C_l, H, W]``::

    box tower:   depth x Conv3x3-BN-SiLU (box_width)  -> 1x1 -> A * (R [+ obj] [+ 4 log-var] [+ quality])
    class tower: depth x Conv3x3-BN-SiLU (cls_width)  -> 1x1 -> A * (C [+ background])

Objectness and the quality (centerness) logit sit on the box tower, as in YOLOX and FCOS (centerness on the
regression branch). The two predictions are interleaved into the head's channel layout, so the output, the
flattening and everything downstream are those of :class:`~detector.models.heads.yolo.YOLOv5Head`: heads are
interchangeable by config (``model.head: decoupled``).

Widths default to YOLOv8's rule for the finest input ``c0``: ``box_width = max(16, c0 // 4, R)`` and
``cls_width = max(c0, min(C, 100))`` (yolov8n on COCO: 64 and 80). YOLOv8's towers are 2 deep, YOLOX's 2, FCOS's 4.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detector.models.common import Conv
from detector.models.heads.yolo import NUM_LOG_VAR, ChannelLayout, flatten_level_outputs
from detector.structures import HeadOutputs, Priors


class DecoupledHead(nn.Module):
    """Box and class towers per level (not shared across levels, as YOLOv8 and YOLOX).

    Args:
        in_channels: channels of each input level; num_classes: ``C``; num_anchors: ``A`` (int or per level; 1 for
            points); strides: stride of each level in pixels (bias initialisation).
        box_uncertainty, objectness, background, quality, box_outputs: the outputs, as for ``YOLOv5Head``.
        depth: 3x3 convolutions per tower (>= 0).
        box_width, cls_width: channels of the towers; None for YOLOv8's rule (module docstring).
        upsample: nearest-neighbour upsampling of every input before the towers (CenterNet: 2, a stride-4 map
            from the stride-8 level); the priors' strides are the inputs' divided by it.
        cls_prior: initial class probability (CenterNet: 0.1, a bias of -2.19); None for YOLOv8's rule.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        num_anchors: int | Sequence[int],
        strides: Sequence[int],
        box_uncertainty: bool = False,
        objectness: bool = False,
        background: bool = False,
        quality: bool = False,
        box_outputs: int = 4,
        depth: int = 2,
        box_width: int | None = None,
        cls_width: int | None = None,
        upsample: int = 1,
        cls_prior: float | None = None,
    ):
        super().__init__()
        levels = len(in_channels)
        anchors = [int(num_anchors)] * levels if isinstance(num_anchors, int) else [int(a) for a in num_anchors]
        if num_classes < 1 or len(anchors) != levels or len(strides) != levels:
            raise ValueError(f"DecoupledHead: need num_classes >= 1 and one anchor count and stride per input level; "
                             f"got {num_classes} classes, {levels} levels, {len(anchors)} anchor counts, "
                             f"{len(strides)} strides")
        if depth < 0 or upsample < 1 or not (cls_prior is None or 0.0 < cls_prior < 1.0):
            raise ValueError(f"DecoupledHead: need depth >= 0, upsample >= 1 and cls_prior in (0, 1); got depth "
                             f"{depth}, upsample {upsample}, cls_prior {cls_prior}")
        self.upsample, self.cls_prior = int(upsample), cls_prior
        self.num_classes, self.num_anchors = int(num_classes), anchors
        self.layout = ChannelLayout(self.num_classes, int(box_outputs), bool(objectness), bool(background),
                                    bool(box_uncertainty), bool(quality))
        self.box_uncertainty = self.layout.box_uncertainty
        lay = self.layout
        self.box_channels = lay.box_outputs + int(lay.objectness) + NUM_LOG_VAR * int(lay.box_uncertainty) + \
            int(lay.quality)  # per prior, box tower
        self.cls_channels = self.num_classes + int(lay.background)  # per prior, class tower
        c0 = int(in_channels[0])
        bw = int(box_width) if box_width else max(16, c0 // 4, lay.box_outputs)
        cw = int(cls_width) if cls_width else max(c0, min(self.num_classes, 100))

        def tower(c_in: int, width: int, out: int) -> nn.Sequential:
            convs = [Conv(c_in if i == 0 else width, width, 3) for i in range(depth)]
            return nn.Sequential(*convs, nn.Conv2d(width if depth else c_in, out, 1))

        self.box_towers = nn.ModuleList(tower(c, bw, a * self.box_channels) for c, a in zip(in_channels, anchors))
        self.cls_towers = nn.ModuleList(tower(c, cw, a * self.cls_channels) for c, a in zip(in_channels, anchors))
        for box_t, cls_t, a, s in zip(self.box_towers, self.cls_towers, anchors, strides):
            self._init_bias(box_t[-1], cls_t[-1], a, float(s))

    @torch.no_grad()
    def _init_bias(self, box_conv: nn.Conv2d, cls_conv: nn.Conv2d, num_anchors: int, stride: float) -> None:
        """YOLOv8's initialisation, with YOLOv5's for objectness and SSD's for the background channel.

        * classes: ``log(5 / C / (640 / stride)^2)``: about 5 objects per 640-pixel image spread over the cells
          (stride 8, 80 classes: ``log(5 / 80 / 6400) = -11.54``), or ``logit(cls_prior)``; a softmax head's background starts at
          probability 0.99 (``log(99 * C)``, the other logits 0);
        * box: 1.0 for a distribution head (equal bins), PyTorch's default otherwise;
        * objectness: YOLOv5's ``log(8 / (640 / stride)^2)``; quality and log-variances: 0.
        """
        lay, c = self.layout, self.num_classes
        cls_b = cls_conv.bias.view(num_anchors, self.cls_channels)  # (A, C [+ 1])
        if lay.background:
            cls_b.zero_()
            cls_b[:, -1] = math.log(99.0 * c)
        elif self.cls_prior is not None:
            cls_b.fill_(math.log(self.cls_prior / (1.0 - self.cls_prior)))
        else:
            cls_b.fill_(math.log(5.0 / c / (640.0 / stride) ** 2))
        box_b = box_conv.bias.view(num_anchors, self.box_channels)  # (A, R [+ 1] [+ 4] [+ 1])
        r = lay.box_outputs
        if r > 4:
            box_b[:, :r] = 1.0
        box_b[:, r:] = 0.0
        if lay.objectness:
            box_b[:, r] = math.log(8.0 / (640.0 / stride) ** 2)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """features: per level Tensor[B, C_l, H, W] -> per level Tensor[B, A, H, W, K] (raw, undecoded)."""
        if len(features) != len(self.box_towers):
            raise ValueError(f"DecoupledHead: expected {len(self.box_towers)} feature levels, got {len(features)}")
        split = self.layout.box_outputs + int(self.layout.objectness)
        out = []
        for x, box_t, cls_t, a in zip(features, self.box_towers, self.cls_towers, self.num_anchors):
            if self.upsample > 1:
                x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")  # (B, C_l, H * u, W * u)
            b, _, h, w = x.shape
            box = box_t(x).view(b, a, self.box_channels, h, w)  # (B, A, R [+ obj] [+ lv] [+ q], H, W)
            cls = cls_t(x).view(b, a, self.cls_channels, h, w)  # (B, A, C [+ bg], H, W)
            parts = [box[:, :, :split], cls, box[:, :, split:]] if split < self.box_channels else [box, cls]
            y = torch.cat(parts, 2)  # (B, A, K, H, W) in ChannelLayout order
            out.append(y.permute(0, 1, 3, 4, 2))  # (B, A, H, W, K)
        return out

    def flatten(self, levels: Sequence[Tensor], priors: Priors) -> HeadOutputs:
        """Per-level outputs of :meth:`forward` -> HeadOutputs (see :func:`flatten_level_outputs`)."""
        return flatten_level_outputs(levels, priors, self.num_classes, layout=self.layout)
