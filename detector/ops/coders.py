"""Box coders: map raw head outputs to xyxy boxes in pixels (and back).

Each coder has ``decode(raw (Tensor[..., 4]), priors: Priors) -> Tensor[..., 4] xyxy`` where the
leading dimensions of ``raw`` end in ``P`` (the flattened priors), and ``encode`` as its inverse.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from detector.structures import Priors


class YOLOv5BoxCoder:
    """YOLOv5's grid coder on sigmoid outputs.

    ``cx = (2 * sigmoid(tx) - 0.5 + gx) * stride`` (the centre may leave its cell by half a cell, which
    is what lets the neighbour-cell assignment work), ``w = (2 * sigmoid(tw))**2 * anchor_w``
    (at most 4x the anchor, matching the assigner's ``anchor_t = 4``).
    """

    def decode(self, raw: Tensor, priors: Priors) -> Tensor:
        """raw (Tensor[..., P, 4]) logits -> Tensor[..., P, 4] xyxy pixels."""
        if priors.anchors is None:
            raise ValueError("YOLOv5BoxCoder needs anchor priors (priors.anchors is None)")
        s = raw.sigmoid()
        xy = (s[..., :2] * 2 - 0.5 + priors.grid) * priors.strides[:, None]  # (..., P, 2)
        wh = (s[..., 2:] * 2) ** 2 * priors.anchors  # (..., P, 2)
        return cxcywh_to_xyxy(torch.cat((xy, wh), dim=-1))

    def encode(self, boxes: Tensor, priors: Priors, eps: float = 1e-6) -> Tensor:
        """boxes (Tensor[..., P, 4]) xyxy pixels -> raw logits that decode to them (clamped to range)."""
        c = xyxy_to_cxcywh(boxes)
        sxy = (c[..., :2] / priors.strides[:, None] - priors.grid + 0.5) / 2
        swh = (c[..., 2:] / priors.anchors).clamp(min=0).sqrt() / 2
        s = torch.cat((sxy, swh), dim=-1).clamp(eps, 1 - eps)
        return torch.logit(s)
