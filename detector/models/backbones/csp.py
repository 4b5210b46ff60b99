"""CSP-Darknet backbone of YOLOv5 v6.0 onward (``models/yolov5s.yaml``, layers 0-9).

Letter convention in shape comments: ``B`` images, ``H, W`` input size (multiples of 32).

Layer plan at width 1.0 / depth 1.0 (YOLOv5l); ``w(c) = make_divisible(c * width_multiple, 8)``,
``d(n) = scale_depth(n, depth_multiple)``::

    stem    Conv(in, w(64), 6, stride 2, pad 2)        P1/2
    stage1  Conv(w(64), w(128), 3, 2),  C3 x d(3)      P2/4
    stage2  Conv(w(128), w(256), 3, 2), C3 x d(6)      P3/8   -> output 0
    stage3  Conv(w(256), w(512), 3, 2), C3 x d(9)      P4/16  -> output 1
    stage4  Conv(w(512), w(1024), 3, 2), C3 x d(3), SPPF(k=5)  P5/32 -> output 2
"""
from __future__ import annotations

from torch import Tensor, nn

from detector.models.common import C3, SPPF, Conv, make_divisible, scale_depth


class CSPDarknet(nn.Module):
    """YOLOv5's CSP-Darknet with an SPPF at the end.

    Args:
        in_channels: image channels (3 for RGB).
        depth_multiple: scales the number of Bottlenecks in each C3 (YOLOv5 ``depth_multiple``).
        width_multiple: scales every channel count, rounded up to a multiple of 8 (``width_multiple``).

    Attributes:
        out_channels (tuple[int, int, int]): channels of the P3, P4, P5 outputs.
        strides (tuple[int, int, int]): ``(8, 16, 32)``.
    """

    strides = (8, 16, 32)

    def __init__(self, in_channels: int = 3, depth_multiple: float = 1.0, width_multiple: float = 1.0):
        super().__init__()

        def w(c: int) -> int:
            return make_divisible(c * width_multiple, 8)

        def d(n: int) -> int:
            return scale_depth(n, depth_multiple)

        self.stem = Conv(in_channels, w(64), 6, 2, 2)
        self.stage1 = nn.Sequential(Conv(w(64), w(128), 3, 2), C3(w(128), w(128), d(3)))
        self.stage2 = nn.Sequential(Conv(w(128), w(256), 3, 2), C3(w(256), w(256), d(6)))
        self.stage3 = nn.Sequential(Conv(w(256), w(512), 3, 2), C3(w(512), w(512), d(9)))
        self.stage4 = nn.Sequential(
            Conv(w(512), w(1024), 3, 2), C3(w(1024), w(1024), d(3)), SPPF(w(1024), w(1024), 5)
        )
        self.out_channels = (w(256), w(512), w(1024))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """images (Tensor[B, in, H, W]) -> (P3 [B, c3, H/8, W/8], P4 [B, c4, H/16, W/16], P5 [B, c5, H/32, W/32])."""
        x = self.stage1(self.stem(images))
        p3 = self.stage2(x)
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        return p3, p4, p5
