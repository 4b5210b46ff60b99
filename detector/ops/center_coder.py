"""CenterNet's box coder (Zhou et al. 2019): a sub-cell offset of the centre and the box size, per point prior.

The interface is :class:`detector.ops.coders.BoxCoder`'s (see that module for ``decode`` / ``decode_at`` /
``encode`` / ``encode_at``). Letters as there: ``P`` priors, ``M`` gathered priors, ``N`` either.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from detector.ops.coders import BoxCoder

__all__ = ["CenterNetCoder"]


class CenterNetCoder(BoxCoder):
    """CenterNet's ``(offset, size)`` regression for point priors; ``R = 4``, no activation.

    ``raw = (ox, oy, w, h)`` in units of the prior's stride ``s``. The prior's cell index is ``(gx, gy) =
    priors.grid`` (its centre ``priors.centers / s - 0.5``), and::

        cx = (gx + ox) * s    cy = (gy + oy) * s    box width = w * s    box height = h * s

    i.e. CenterNet's decode on the output map (``x_int + offset``, ``wh`` in output cells) times the stride.
    The offset of a box assigned to the cell holding its centre lies in ``[0, 1)``; decode does not bound it.
    ``encode`` / ``encode_at`` are the exact inverse: ``ox = cx / s - gx``, ``w = box width / s`` (a prior whose
    cell does not hold the box centre gets an offset outside ``[0, 1)``). Anchors are not needed.

    Example: prior at cell ``(3, 5)`` of stride 4 (centre ``(14, 22)``), raw ``(0.5, 0.25, 6, 2)``: centre
    ``(3.5 * 4, 5.25 * 4) = (14, 21)``, size ``(24, 8)``: xyxy ``(2, 17, 26, 25)``.
    """

    num_outputs = 4
    needs_anchors = False

    def __repr__(self) -> str:
        return "CenterNetCoder()"

    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        s = strides[:, None]  # (N, 1)
        centre = (grid + raw[..., :2]) * s  # (..., N, 2)
        return cxcywh_to_xyxy(torch.cat((centre, raw[..., 2:] * s), dim=-1))

    def _encode(self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        s = strides[:, None]  # (N, 1)
        c = xyxy_to_cxcywh(boxes)  # (..., N, 4)
        return torch.cat((c[..., :2] / s - grid, c[..., 2:] / s), dim=-1)
