"""Box coders for point priors (anchor-free heads): ltrb distances (FCOS) and per-side distributions (GFL / YOLOv8).

The interface is :class:`detector.ops.coders.BoxCoder`'s (see that module). Letters as there; in
:class:`DistributionCoder` ``K`` is ``bins``. The prior centre is ``priors.centers = (grid + 0.5) * stride``.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from detector.ops.coders import BoxCoder, _centers, _check_eps

__all__ = ["DistributionCoder", "LTRBCoder", "dfl_expectation", "ltrb_to_xyxy", "xyxy_to_ltrb"]


_ACTIVATIONS = ("none", "exp", "relu")


class LTRBCoder(BoxCoder):
    """Distances from the prior centre to the four box sides (FCOS, YOLOv8 after DFL), for any priors; ``R = 4``.

    ``raw = (l, t, r, b)``; with ``d = activation(raw)`` and ``s`` the prior's stride (1 unless
    ``normalize_by_stride``) and ``(cx, cy) = priors.centers``::

        x1 = cx - l * s    y1 = cy - t * s    x2 = cx + r * s    y2 = cy + b * s

    ``activation``: ``"none"`` (raw are already distances, e.g. after a head's own activation), ``"exp"``
    or ``"relu"`` (FCOS applies one of them to its regression output). ``encode`` returns the distances
    ``((cx - x1) / s, ...)`` through the inverse activation: ``"none"`` identity; ``"exp"`` ``log`` of the
    distance clamped below at ``eps`` (a prior outside its box has no preimage); ``"relu"`` identity, which
    inverts relu on positive distances (negative ones, a prior outside its box, are returned unchanged and
    cannot be reached by decode). Anchors are not needed (``priors.anchors`` is ignored).

    Example: prior at cell ``(3, 5)`` of stride 8 (centre ``(28, 44)``), raw ``(1, 2, 0.5, 1)``, activation
    ``"none"``: xyxy ``(28 - 8, 44 - 16, 28 + 4, 44 + 8) = (20, 28, 32, 52)``; with ``"exp"`` the same box
    is raw ``(0, ln 2, -ln 2, 0)``.

    Args:
        normalize_by_stride: distances in units of the prior's stride (True) or in pixels (False).
        activation: ``"none"``, ``"exp"`` or ``"relu"``, applied to ``raw`` in decode.
        eps: lower clamp of the distance before ``log`` in encode with ``"exp"``, positive.
    """

    num_outputs = 4
    needs_anchors = False

    def __init__(self, normalize_by_stride: bool = True, activation: str = "none", eps: float = 1e-6):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"LTRBCoder: activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.normalize_by_stride = bool(normalize_by_stride)
        self.activation = activation
        self.eps = _check_eps("LTRBCoder", eps)

    def __repr__(self) -> str:
        return (
            f"LTRBCoder(normalize_by_stride={self.normalize_by_stride}, activation={self.activation!r}, "
            f"eps={self.eps})"
        )

    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        if self.activation == "exp":
            raw = raw.exp()
        elif self.activation == "relu":
            raw = raw.relu()
        return ltrb_to_xyxy(raw, grid, strides, self.normalize_by_stride)

    def _encode(self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        d = xyxy_to_ltrb(boxes, grid, strides, self.normalize_by_stride)  # (..., N, 4)
        if self.activation == "exp":
            return d.clamp(min=self.eps).log()
        return d


def ltrb_to_xyxy(dist: Tensor, grid: Tensor, strides: Tensor, normalize_by_stride: bool = True) -> Tensor:
    """dist (Tensor[..., N, 4]) ``(l, t, r, b)`` from the prior centres -> Tensor[..., N, 4] xyxy pixels.

    grid (Tensor[N, 2]) and strides (Tensor[N]) as in :class:`Priors`; distances in stride units when
    ``normalize_by_stride``, else pixels.
    """
    centers = _centers(grid, strides)  # (N, 2)
    if normalize_by_stride:
        dist = dist * strides[:, None]  # (..., N, 4)
    return torch.cat((centers - dist[..., :2], centers + dist[..., 2:]), dim=-1)


def xyxy_to_ltrb(boxes: Tensor, grid: Tensor, strides: Tensor, normalize_by_stride: bool = True) -> Tensor:
    """boxes (Tensor[..., N, 4]) xyxy pixels -> Tensor[..., N, 4] ``(l, t, r, b)`` from the prior centres.

    Negative entries mean the prior centre lies outside the box on that side.
    """
    centers = _centers(grid, strides)  # (N, 2)
    dist = torch.cat((centers - boxes[..., :2], boxes[..., 2:] - centers), dim=-1)  # (..., N, 4)
    return dist / strides[:, None] if normalize_by_stride else dist


def dfl_expectation(raw: Tensor, bins: int) -> Tensor:
    """raw (Tensor[..., 4 * K]) logits, ``K = bins`` per side in order ``(l, t, r, b)`` -> Tensor[..., 4].

    Per side: the expectation ``sum_k k * softmax(logits)_k`` of a distribution over ``0, 1, ..., K - 1``
    (Li et al., "Generalized Focal Loss", 2020; YOLOv8's DFL with ``reg_max = 16``). The ``4 * K`` values
    are side-major: ``raw[..., s * K + k]`` is bin ``k`` of side ``s``.

    Example (``K = 4``): logits ``(0, 0, 0, 0)`` give ``(0 + 1 + 2 + 3) / 4 = 1.5``; logits
    ``(0, 0, 30, 0)`` give ``2`` (to within ``3 e^-30``).
    """
    if raw.shape[-1] != 4 * bins:
        raise ValueError(
            f"dfl_expectation: raw must be Tensor[..., 4 * bins] = [..., {4 * bins}], got {tuple(raw.shape)}"
        )
    prob = raw.unflatten(-1, (4, bins)).softmax(dim=-1)  # (..., 4, K)
    proj = torch.arange(bins, dtype=prob.dtype, device=prob.device)  # (K,)
    return prob @ proj  # (..., 4)


class DistributionCoder(BoxCoder):
    """Distribution Focal Loss coder (GFL / YOLOv8), for any priors; ``R = 4 * bins``.

    ``raw`` (Tensor[..., P, 4 * K]) holds, per side ``(l, t, r, b)``, logits over the ``K = bins`` distances
    ``0, 1, ..., K - 1``; the side's distance is their expectation (:func:`dfl_expectation`), in stride units
    when ``normalize_by_stride``, and the box follows as in :class:`LTRBCoder`
    (``x1 = cx - l * stride``, ...). Anchors are not needed.

    ``encode`` / ``encode_at`` return the continuous ``(l, t, r, b)`` distance targets, Tensor[M, 4] (not
    ``R = 4 * K``), clamped to ``[0, K - 1 - 0.01]``: a distribution has no unique logits, and DFL's loss
    needs the target distance itself (its two neighbouring bins ``floor(d)`` and ``floor(d) + 1``, which
    the 0.01 keeps inside ``0..K - 1``). Boxes whose distances fit that range decode back from any logits
    with that expectation (e.g. the two-hot distribution on those bins).

    Example (``bins = 4``, prior at centre ``(28, 44)``, stride 8): uniform logits decode every side to
    ``1.5`` strides: xyxy ``(16, 32, 40, 56)``.

    Args:
        bins: ``K >= 2`` bins per side (YOLOv8: ``reg_max = 16``).
        normalize_by_stride: distances in units of the prior's stride (True) or in pixels (False).
    """

    needs_anchors = False

    def __init__(self, bins: int = 16, normalize_by_stride: bool = True):
        if not isinstance(bins, numbers.Integral) or isinstance(bins, bool) or bins < 2:
            raise ValueError(f"DistributionCoder: bins must be an integer >= 2 (YOLOv8: 16), got {bins!r}")
        self.bins = int(bins)
        self.normalize_by_stride = bool(normalize_by_stride)
        self.num_outputs = 4 * self.bins

    def __repr__(self) -> str:
        return f"DistributionCoder(bins={self.bins}, normalize_by_stride={self.normalize_by_stride})"

    @property
    def max_distance(self) -> float:
        """Upper clamp of the encoded distances: ``bins - 1 - 0.01``."""
        return self.bins - 1 - 0.01

    def _decode(self, raw: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        return ltrb_to_xyxy(dfl_expectation(raw, self.bins), grid, strides, self.normalize_by_stride)

    def _encode(self, boxes: Tensor, grid: Tensor, strides: Tensor, anchors: Tensor | None) -> Tensor:
        d = xyxy_to_ltrb(boxes, grid, strides, self.normalize_by_stride)  # (..., N, 4)
        return d.clamp(0.0, self.max_distance)
