"""The R-CNN delta coder (SSD, Faster R-CNN's RPN, RetinaNet), with the interface of
:class:`detector.ops.coders.BoxCoder`."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detector.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from detector.ops.coders import BoxCoder, _centers, _check_eps

__all__ = ["DeltaBoxCoder"]


class DeltaBoxCoder(BoxCoder):
    """The R-CNN delta coder (Girshick et al.), for anchor priors; ``R = 4``.

    The anchor box of a prior is centred on ``priors.centers`` with size ``priors.anchors``: centre
    ``(acx, acy)``, size ``(aw, ah)``. A box of centre ``(gcx, gcy)`` and size ``(gw, gh)`` is coded as::

        dx = wx * (gcx - acx) / aw      dw = ww * log(gw / aw)
        dy = wy * (gcy - acy) / ah      dh = wh * log(gh / ah)

    ``decode`` inverts this and clamps ``dw / ww`` and ``dh / wh`` at ``clip`` before ``exp`` (as torchvision's
    ``BoxCoder``; the default keeps a box under 1000 / 16 = 62.5 anchors). ``encode`` clamps ``gw / aw`` and
    ``gh / ah`` below at ``eps`` so a zero-size box stays finite; otherwise it equals torchvision's
    ``encode_single``.

    Weights: SSD's variances ``(0.1, 0.2)`` are weights ``(10, 10, 5, 5)`` (1 / variance); Faster R-CNN's RPN
    uses ``(1, 1, 1, 1)`` and its box head (ROI heads) ``(10, 10, 5, 5)``.

    Example (weights ``(10, 10, 5, 5)``): anchor ``(16, 32)`` centred at ``(28, 44)`` and the box of centre
    ``(30, 40)``, size ``(32, 16)``: ``dx = 10 * 2 / 16 = 1.25``, ``dy = 10 * -4 / 32 = -1.25``,
    ``dw = 5 ln 2 = 3.4657``, ``dh = 5 ln 0.5 = -3.4657``; decoding these gives the box back,
    xyxy ``(14, 32, 46, 48)``.

    Args:
        weights: ``(wx, wy, ww, wh)``, positive.
        clip: upper clamp of ``dw / ww`` and ``dh / wh`` in decode, positive.
        eps: lower clamp of the size ratio in encode, positive.
    """

    num_outputs = 4
    needs_anchors = True

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip: float = math.log(1000.0 / 16),
        eps: float = 1e-6,
    ):
        w = tuple(float(v) for v in weights)
        if len(w) != 4 or not all(math.isfinite(v) and v > 0 for v in w):
            raise ValueError(
                f"DeltaBoxCoder: weights must be 4 positive finite numbers (wx, wy, ww, wh), e.g. (10, 10, 5, 5); "
                f"got {tuple(weights)}"
            )
        if not float(clip) > 0:
            raise ValueError(f"DeltaBoxCoder: clip must be > 0 (a log size ratio, default ln(1000 / 16)), got {clip}")
        self.weights = w
        self.clip = float(clip)
        self.eps = _check_eps("DeltaBoxCoder", eps)

    def __repr__(self) -> str:
        return f"DeltaBoxCoder(weights={self.weights}, clip={self.clip}, eps={self.eps})"

    def _weights(self, like: Tensor) -> Tensor:
        return torch.tensor(self.weights, dtype=like.dtype, device=like.device)  # (4,)

    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        d = raw / self._weights(raw)  # (..., N, 4)
        xy = d[..., :2] * anchors + _centers(grid, strides)  # (..., N, 2)
        wh = d[..., 2:].clamp(max=self.clip).exp() * anchors  # (..., N, 2)
        return cxcywh_to_xyxy(torch.cat((xy, wh), dim=-1))

    def _encode(self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        c = xyxy_to_cxcywh(boxes)  # (..., N, 4)
        dxy = (c[..., :2] - _centers(grid, strides)) / anchors  # (..., N, 2)
        dwh = (c[..., 2:] / anchors).clamp(min=self.eps).log()  # (..., N, 2)
        return torch.cat((dxy, dwh), dim=-1) * self._weights(c)
