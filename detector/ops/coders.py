"""Box coders: map raw head regression to xyxy boxes in pixels of the network input, and back.

Letter convention (see :mod:`detector.structures`): ``P`` priors over all levels (flattened), ``M`` selected
priors (for example the positive pairs of an assignment), ``R`` raw values per prior (``num_outputs``),
``...`` any leading dimensions (usually ``B`` images).

Every coder has the same interface:

* ``decode(raw (Tensor[..., P, R]), priors) -> Tensor[..., P, 4]`` xyxy pixels, for every prior;
* ``decode_at(raw (Tensor[M, R]), priors, prior_index (Tensor[M] long)) -> Tensor[M, 4]``: only the priors
  ``prior_index``; equal to ``decode`` followed by indexing, but it only gathers ``M`` rows of the priors'
  tensors (the loss decodes just the positive pairs: ``raw = outputs.box[batch_index, prior_index]``);
* ``encode_at(boxes (Tensor[M, 4]) xyxy pixels, priors, prior_index (Tensor[M])) -> Tensor[M, R]``: the
  regression target in the raw space (the inverse of ``decode_at`` where one exists; see each coder), for
  losses on encoded deltas (SSD / Faster R-CNN smooth-L1). Exception: ``DistributionCoder`` returns the
  ``(l, t, r, b)`` distances, Tensor[M, 4], that DFL's loss needs, not ``R = 4 * bins`` logits;
* ``encode(boxes (Tensor[..., P, 4]), priors) -> Tensor[..., P, R]``: ``encode_at`` for every prior;
* attributes ``num_outputs`` (``R``) and ``needs_anchors`` (False: point priors, ``priors.anchors`` None, do);
  a ``__repr__`` with the constructor's parameters.

The prior centre is ``priors.centers = (grid + 0.5) * stride``; anchor coders read ``priors.anchors``
(``(w, h)`` pixels) and raise ValueError for point priors. Coders are plain objects without state.

Which coder a recipe uses: YOLOv5 :class:`YOLOv5BoxCoder`; YOLOv2 / v3 :class:`YOLOv3BoxCoder`; SSD, Faster
R-CNN, RetinaNet ``DeltaBoxCoder`` (in :mod:`detector.ops.delta_coder`); FCOS ``LTRBCoder`` and GFL / YOLOv8 ``DistributionCoder`` (point priors,
in :mod:`detector.ops.point_coders`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from detector.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from detector.structures import Priors

__all__ = [
    "BoxCoder",
    "YOLOv5BoxCoder",
    "YOLOv3BoxCoder",
]


class BoxCoder:
    """Base of the coders: shape checks and prior gathering; subclasses implement ``_decode`` / ``_encode``.

    ``_decode(raw (Tensor[..., N, R]), grid (Tensor[N, 2]), strides (Tensor[N]), anchors (Tensor[N, 2] | None))``
    and ``_encode(boxes (Tensor[..., N, 4]), grid, strides, anchors)`` work on per-prior tensors of length
    ``N``: all ``P`` priors for ``decode`` / ``encode``, the ``M`` gathered rows for ``decode_at`` /
    ``encode_at``, so both paths run the same arithmetic.
    """

    num_outputs: int  # R; a class attribute of the 4-value coders, set per instance by DistributionCoder
    needs_anchors: bool = False

    # ---- public interface -------------------------------------------------------------------------------
    def decode(self, raw: Tensor, priors: Priors) -> Tensor:
        """raw (Tensor[..., P, R]) -> Tensor[..., P, 4] xyxy pixels, one box per prior."""
        self._check_raw(raw, len(priors), "decode", "P = len(priors)")
        return self._decode(raw, *self._prior_tensors(priors, None, "decode"))

    def decode_at(self, raw: Tensor, priors: Priors, prior_index: Tensor) -> Tensor:
        """raw (Tensor[M, R]) of the priors ``prior_index`` (Tensor[M] long) -> Tensor[M, 4] xyxy pixels.

        Equals ``decode(full_raw, priors)[..., prior_index, :]`` where ``raw = full_raw[..., prior_index, :]``;
        only ``M`` rows of the priors' tensors are gathered.
        """
        self._check_index(prior_index, "decode_at")
        self._check_raw(raw, prior_index.shape[0], "decode_at", "M = len(prior_index)")
        return self._decode(raw, *self._prior_tensors(priors, prior_index, "decode_at"))

    def encode(self, boxes: Tensor, priors: Priors) -> Tensor:
        """boxes (Tensor[..., P, 4]) xyxy pixels, one per prior -> Tensor[..., P, R] raw targets."""
        self._check_boxes(boxes, len(priors), "encode", "P = len(priors)")
        return self._encode(boxes, *self._prior_tensors(priors, None, "encode"))

    def encode_at(self, boxes: Tensor, priors: Priors, prior_index: Tensor) -> Tensor:
        """boxes (Tensor[M, 4]) xyxy pixels for the priors ``prior_index`` (Tensor[M]) -> Tensor[M, R] raw targets."""
        self._check_index(prior_index, "encode_at")
        self._check_boxes(boxes, prior_index.shape[0], "encode_at", "M = len(prior_index)")
        return self._encode(boxes, *self._prior_tensors(priors, prior_index, "encode_at"))

    # ---- to implement -------------------------------------------------------------------------------------
    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _encode(self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        raise NotImplementedError

    # ---- helpers ------------------------------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return type(self).__name__

    def _prior_tensors(
        self, priors: Priors, prior_index: Tensor | None, where: str
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(grid (Tensor[N, 2]), strides (Tensor[N]), anchors (Tensor[N, 2] | None))``: all ``P`` priors, or the
        ``M`` rows ``prior_index`` (anchors None for coders that do not need them)."""
        if self.needs_anchors and priors.anchors is None:
            raise ValueError(
                f"{self._name}.{where}: this coder needs anchor priors (priors.anchors is None: point priors, e.g. "
                f"from PointPriorGenerator); use AnchorPriorGenerator priors, or LTRBCoder / DistributionCoder "
                f"for point priors"
            )
        anchors = priors.anchors if self.needs_anchors else None
        if prior_index is None:
            return priors.grid, priors.strides, anchors
        grid, strides = priors.grid[prior_index], priors.strides[prior_index]  # (M, 2), (M,)
        return grid, strides, None if anchors is None else anchors[prior_index]  # (M, 2)

    def _check_raw(self, raw: Tensor, length: int, where: str, what: str) -> None:
        if raw.ndim < 2 or raw.shape[-1] != self.num_outputs or raw.shape[-2] != length:
            raise ValueError(
                f"{self._name}.{where}: raw must be Tensor[..., N, R] with N = {length} ({what}) and "
                f"R = num_outputs = {self.num_outputs}; got shape {tuple(raw.shape)}"
            )

    def _check_boxes(self, boxes: Tensor, length: int, where: str, what: str) -> None:
        if boxes.ndim < 2 or boxes.shape[-1] != 4 or boxes.shape[-2] != length:
            raise ValueError(
                f"{self._name}.{where}: boxes must be xyxy Tensor[..., N, 4] with N = {length} ({what}); "
                f"got shape {tuple(boxes.shape)}"
            )

    def _check_index(self, prior_index: Tensor, where: str) -> None:
        if prior_index.ndim != 1 or prior_index.dtype.is_floating_point or prior_index.dtype == torch.bool:
            raise ValueError(
                f"{self._name}.{where}: prior_index must be an integer Tensor[M] of flat prior indices; got "
                f"dtype {prior_index.dtype}, shape {tuple(prior_index.shape)}"
            )


def _check_eps(name: str, eps: float, upper: float = math.inf) -> float:
    eps = float(eps)
    if not 0.0 < eps < upper:
        bound = f" and < {upper}" if math.isfinite(upper) else ""
        raise ValueError(f"{name}: eps must be > 0{bound}, got {eps}")
    return eps


def _centers(grid: Tensor, strides: Tensor) -> Tensor:
    """Prior centres Tensor[N, 2] pixels, as :attr:`Priors.centers`."""
    return (grid + 0.5) * strides[:, None]


class YOLOv5BoxCoder(BoxCoder):
    """YOLOv5's grid coder on sigmoid outputs, for anchor priors; ``R = 4``.

    ``cx = (2 * sigmoid(tx) - 0.5 + gx) * stride`` (the centre may leave its cell by half a cell, which
    is what lets the neighbour-cell assignment work), ``w = (2 * sigmoid(tw))**2 * anchor_w``
    (at most 4x the anchor, matching the assigner's ``anchor_t = 4``); the same in y / h.

    ``encode`` / ``encode_at`` invert it: the in-cell offset ``(cx / stride - gx + 0.5) / 2`` and
    ``sqrt(w / anchor_w) / 2`` are clamped to ``(eps, 1 - eps)`` and passed through ``logit``, so a box whose
    centre lies outside ``(-0.5, 1.5)`` cells of the prior or whose size is outside ``(0, 4)`` anchors is
    encoded as the nearest reachable one.

    Example: anchor ``(10, 13)`` at cell ``(gx, gy) = (3, 5)`` of stride 8 with raw ``(0, 0, 0, 0)``:
    ``sigmoid(0) = 0.5``, so ``cx = (1 - 0.5 + 3) * 8 = 28``, ``cy = (0.5 + 5) * 8 = 44``,
    ``w = (2 * 0.5)**2 * 10 = 10``, ``h = 13``: xyxy ``(23, 37.5, 33, 50.5)``.

    Args:
        eps: clamp of the sigmoid-space targets in ``encode`` / ``encode_at``, in ``(0, 0.5)``.
    """

    num_outputs = 4
    needs_anchors = True

    def __init__(self, eps: float = 1e-6):
        self.eps = _check_eps("YOLOv5BoxCoder", eps, 0.5)

    def __repr__(self) -> str:
        return f"YOLOv5BoxCoder(eps={self.eps})"

    def encode(self, boxes: Tensor, priors: Priors, eps: float | None = None) -> Tensor:
        """boxes (Tensor[..., P, 4]) xyxy pixels -> raw logits that decode to them (clamped to range).

        ``eps`` overrides the constructor's clamp for this call.
        """
        self._check_boxes(boxes, len(priors), "encode", "P = len(priors)")
        grid, strides, anchors = self._prior_tensors(priors, None, "encode")
        return self._encode(boxes, grid, strides, anchors, self.eps if eps is None else eps)

    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        s = raw.sigmoid()
        xy = (s[..., :2] * 2 - 0.5 + grid) * strides[:, None]  # (..., N, 2)
        wh = (s[..., 2:] * 2) ** 2 * anchors  # (..., N, 2)
        return cxcywh_to_xyxy(torch.cat((xy, wh), dim=-1))

    def _encode(
        self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None, eps: float | None = None
    ) -> Tensor:
        eps = self.eps if eps is None else eps
        c = xyxy_to_cxcywh(boxes)  # (..., N, 4)
        sxy = (c[..., :2] / strides[:, None] - grid + 0.5) / 2  # (..., N, 2)
        swh = (c[..., 2:] / anchors).clamp(min=0).sqrt() / 2  # (..., N, 2)
        s = torch.cat((sxy, swh), dim=-1).clamp(eps, 1 - eps)
        return torch.logit(s)


class YOLOv3BoxCoder(BoxCoder):
    """The YOLOv2 / YOLOv3 grid coder, for anchor priors; ``R = 4``.

    ``cx = (sigmoid(tx) + gx) * stride``, ``w = exp(tw) * anchor_w`` (the same in y / h): the centre stays
    inside its cell, the size is unbounded (no clamp on ``tw``, as in the papers).

    ``encode`` / ``encode_at`` are the exact inverse: ``tx = logit(cx / stride - gx)`` with the in-cell offset
    clamped to ``(eps, 1 - eps)`` (a centre outside the prior's cell is moved to its border), and
    ``tw = log(w / anchor_w)`` with the ratio clamped below at ``eps`` (a zero-size box stays finite).

    Example: anchor ``(10, 13)`` at cell ``(gx, gy) = (3, 5)`` of stride 8 with raw ``(0, 0, 0, 0)`` decodes
    to centre ``((0.5 + 3) * 8, (0.5 + 5) * 8) = (28, 44)`` and size ``(10, 13)``: xyxy ``(23, 37.5, 33, 50.5)``.
    The box of centre ``(30, 42)`` and size ``(20, 13)`` there encodes to ``tx = logit(0.75) = ln 3``,
    ``ty = logit(0.25) = -ln 3``, ``tw = ln 2``, ``th = 0``.

    Args:
        eps: clamp of the in-cell offset and the size ratio in ``encode_at``, in ``(0, 0.5)``.
    """

    num_outputs = 4
    needs_anchors = True

    def __init__(self, eps: float = 1e-6):
        self.eps = _check_eps("YOLOv3BoxCoder", eps, 0.5)

    def __repr__(self) -> str:
        return f"YOLOv3BoxCoder(eps={self.eps})"

    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        xy = (raw[..., :2].sigmoid() + grid) * strides[:, None]  # (..., N, 2)
        wh = raw[..., 2:].exp() * anchors  # (..., N, 2)
        return cxcywh_to_xyxy(torch.cat((xy, wh), dim=-1))

    def _encode(self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        c = xyxy_to_cxcywh(boxes)  # (..., N, 4)
        offset = (c[..., :2] / strides[:, None] - grid).clamp(self.eps, 1 - self.eps)  # (..., N, 2)
        ratio = (c[..., 2:] / anchors).clamp(min=self.eps)  # (..., N, 2)
        return torch.cat((torch.logit(offset), ratio.log()), dim=-1)
