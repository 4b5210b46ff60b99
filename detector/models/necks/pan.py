"""YOLOv5's PAN neck (v6.0 onward, ``models/yolov5s.yaml`` head layers 10-23).

Letter convention in shape comments: ``B`` images; ``H3, W3`` the P3 size (P4 is half, P5 a quarter).

With backbone channels ``(c3, c4, c5)`` (YOLOv5 widths 256, 512, 1024 times ``width_multiple``), the
top-down path reduces P5 to ``c4`` and then ``c3`` channels, the bottom-up path downsamples back, and
the outputs have channels ``(c3, c4, c5)`` again. All C3 blocks here have no shortcut::

    lat5 = Conv(c5, c4, 1)(P5)                    -> up x2, cat P4 -> C3(2*c4, c4)  = t4
    lat4 = Conv(c4, c3, 1)(t4)                    -> up x2, cat P3 -> C3(2*c3, c3)  = out P3
    down3 = Conv(c3, c3, 3, 2)(out P3), cat lat4  -> C3(2*c3, c4)                   = out P4
    down4 = Conv(c4, c4, 3, 2)(out P4), cat lat5  -> C3(2*c4, c5)                   = out P5
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detector.models.common import C3, Conv, scale_depth


class YOLOv5PAN(nn.Module):
    """Top-down FPN then bottom-up PAN over three levels.

    Args:
        in_channels: ``(c3, c4, c5)`` channels of the backbone's P3, P4, P5.
        depth_multiple: scales the 3 Bottlenecks of each C3 (``scale_depth(3, depth_multiple)``).
        outputs: how many levels, from P3, the neck returns (3; CenterNet reads only P3: 1). The bottom-up blocks
            of the levels not returned are not built, so no parameter goes unused (DistributedDataParallel
            expects a gradient for every parameter at every step).

    Attributes:
        out_channels (tuple[int, int, int]): ``(c3, c4, c5)``, equal to ``in_channels``.
    """

    def __init__(self, in_channels: Sequence[int], depth_multiple: float = 1.0, outputs: int = 3):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"YOLOv5PAN takes 3 levels (P3, P4, P5); got in_channels={tuple(in_channels)}")
        c3, c4, c5 = (int(c) for c in in_channels)
        n = scale_depth(3, depth_multiple)
        self.lateral5 = Conv(c5, c4, 1, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = C3(2 * c4, c4, n, shortcut=False)
        self.lateral4 = Conv(c4, c3, 1, 1)
        self.top_down3 = C3(2 * c3, c3, n, shortcut=False)
        if outputs not in (1, 2, 3):
            raise ValueError(f"YOLOv5PAN: outputs must be 1, 2 or 3 levels, got {outputs}")
        if outputs >= 2:
            self.down3 = Conv(c3, c3, 3, 2)
            self.bottom_up4 = C3(2 * c3, c4, n, shortcut=False)
        if outputs == 3:
            self.down4 = Conv(c4, c4, 3, 2)
            self.bottom_up5 = C3(2 * c4, c5, n, shortcut=False)
        self.out_channels = (c3, c4, c5)[:outputs]

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """(P3 [B,c3,H3,W3], P4 [B,c4,H3/2,W3/2], P5 [B,c5,H3/4,W3/4]) -> the same shapes fused, the first
        ``outputs`` of them."""
        p3, p4, p5 = features
        lat5 = self.lateral5(p5)  # (B, c4, H3/4, W3/4)
        t4 = self.top_down4(torch.cat((self.upsample(lat5), p4), dim=1))  # cat: (B, 2*c4, H3/2, W3/2)
        lat4 = self.lateral4(t4)  # (B, c3, H3/2, W3/2)
        out3 = self.top_down3(torch.cat((self.upsample(lat4), p3), dim=1))  # cat: (B, 2*c3, H3, W3)
        if len(self.out_channels) == 1:
            return (out3,)
        out4 = self.bottom_up4(torch.cat((self.down3(out3), lat4), dim=1))  # cat: (B, 2*c3, H3/2, W3/2)
        if len(self.out_channels) == 2:
            return out3, out4
        out5 = self.bottom_up5(torch.cat((self.down4(out4), lat5), dim=1))  # cat: (B, 2*c4, H3/4, W3/4)
        return out3, out4, out5
