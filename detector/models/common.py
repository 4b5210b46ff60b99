"""Building blocks shared by the YOLOv5 backbone and neck (YOLOv5 v6.0 onward).

Letter convention in shape comments: ``B`` images, ``C_in`` / ``C_out`` channels, ``H, W`` spatial size.
Every block maps ``Tensor[B, C_in, H, W]`` to ``Tensor[B, C_out, H', W']`` with ``H' = H / stride``.

Normalisation follows YOLOv5's ``initialize_weights``: BatchNorm ``eps = 1e-3``, ``momentum = 0.03``;
activations are ``SiLU(inplace=True)``; convolutions before a BatchNorm have no bias.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is ``>= x`` (YOLOv5's channel rounding).

    Example: ``make_divisible(64 * 0.25, 8) == 16``, ``make_divisible(20.5, 8) == 24``.
    """
    return int(math.ceil(x / divisor) * divisor)


def scale_depth(n: int, depth_multiple: float) -> int:
    """Number of repeated blocks after depth scaling: ``max(round(n * d), 1)`` for ``n > 1``, else ``n``.

    Uses Python's ``round`` exactly as YOLOv5's ``parse_model`` does (``3 * 0.33 -> 1``, ``9 * 0.33 -> 3``).
    """
    return max(round(n * depth_multiple), 1) if n > 1 else n


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU; ``padding`` defaults to ``kernel_size // 2`` ("same")."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        act: bool = True,
    ):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, H, W]) -> Tensor[B, C_out, H / stride, W / stride]."""
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 Conv to ``out_channels * expansion`` then 3x3 Conv back, with a residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True, expansion: float = 0.5):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.cv1 = Conv(in_channels, hidden, 1, 1)
        self.cv2 = Conv(hidden, out_channels, 3, 1)
        self.add = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, H, W]) -> Tensor[B, C_out, H, W]."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convolutions: ``cv3(cat(m(cv1(x)), cv2(x)))``, ``m`` = ``n`` Bottlenecks at half width."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, shortcut: bool = True, expansion: float = 0.5):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.cv1 = Conv(in_channels, hidden, 1, 1)
        self.cv2 = Conv(in_channels, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, out_channels, 1, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, expansion=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, H, W]) -> Tensor[B, C_out, H, W]."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))  # cat: (B, 2 * hidden, H, W)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained ``k x k`` stride-1 max-pools, equal to SPP(k, 2k-1, 3k-2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = Conv(in_channels, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, out_channels, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C_in, H, W]) -> Tensor[B, C_out, H, W]."""
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), dim=1))  # cat: (B, 4 * hidden, H, W)
