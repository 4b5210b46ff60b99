"""Pure box math. Boxes are ``(x1, y1, x2, y2)`` unless a name says ``cxcywh``.

Two IoU shapes live here:

* pairwise, ``box_iou(boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4])) -> Tensor[N, M]``, every box of the first
  set against every box of the second (assigners, NMS);
* aligned, ``aligned_*(boxes1 (Tensor[..., 4]), boxes2 (Tensor[..., 4])) -> Tensor[...]``, row ``i`` against row
  ``i`` (losses on matched pairs). Leading dimensions broadcast, so ``aligned_diou(a[:, None], b[None])`` is the
  pairwise ``[N, M]`` DIoU.

The aligned family returns similarities (1 for identical boxes, higher is better); a loss is ``1 - value``:

* ``aligned_iou``  = IoU
* ``aligned_giou`` = IoU - (|C| - |A u B|) / |C|                      (Rezatofighi et al. 2019)
* ``aligned_diou`` = IoU - rho^2 / c^2                                (Zheng et al. 2020)
* ``aligned_ciou`` = IoU - rho^2 / c^2 - alpha * v                    (Zheng et al. 2020)
* ``aligned_eiou`` = IoU - rho^2 / c^2 - (w - w_gt)^2 / C_w^2 - (h - h_gt)^2 / C_h^2   (Zhang et al. 2021,
  arXiv 2101.08158)

where C is the smallest box enclosing both, ``C_w, C_h`` its width and height, ``c^2 = C_w^2 + C_h^2`` its squared
diagonal, ``rho`` the distance between the two centres, ``v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2`` and
``alpha = v / (1 - IoU + v)`` taken as a constant (no gradient), as in the CIoU paper and YOLOv5.

Numerical safety of the aligned family: every member is unchanged by translating both boxes together and by
scaling both by the same factor, so each pair is first expressed in the frame of its enclosing box (origin at its
top-left corner, longer side 1). The frame is computed without gradient, which leaves the gradient exact (for a
scale-invariant ``f``, ``f(x) = g(x / s)`` for any constant ``s``). In that frame no square can overflow, whatever
the coordinates, and ``eps`` is relative to the size of the pair rather than to the pixel unit. Denominators carry
``eps``, CIoU's aspect term uses ``atan(w / (h + eps))`` with ``w, h`` clamped at 0, so identical, disjoint,
zero-width, far-apart and huge boxes all give finite values and finite gradients.

NWD, the normalized Gaussian Wasserstein distance (Wang et al. 2021, arXiv 2110.13389), is the one similarity here
that is not an IoU: each box is the 2-D Gaussian ``N((cx, cy), diag(w^2, h^2) / 4)``, the 2-Wasserstein distance
of two such Gaussians is ``W_2 = ||(cx, cy, w/2, h/2) - (cx', cy', w'/2, h'/2)||``, and ``NWD = exp(-W_2 / C)``
with ``C`` a constant in the unit of the boxes. It is absolute, not scale-invariant (no enclosing-box frame), and
it does not drop to 0 for disjoint boxes: two 2 x 2 boxes 3 px apart have IoU 0 but NWD ``exp(-3 / C)``. Both
shapes exist: :func:`aligned_nwd` (the NWD loss is ``1 - aligned_nwd``) and the pairwise :func:`box_nwd`
(assigners, NMS).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

NWD_CONSTANT = 12.8
"""NWD's default ``C`` in pixels: the mean object size of AI-TOD, the paper's value and its code's default. Used where
boxes are pixels (NMS, assigners); the NWD loss works in grid cells and takes ``C = 12.8 / 8 = 1.6`` cells there
(the same 12.8 px on the stride-8 level)."""


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) xyxy -> Tensor[..., 4] (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) (cx, cy, w, h) -> Tensor[..., 4] xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) xyxy -> Tensor[..., 4] (x1, y1, w, h), COCO's format."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) xyxy -> Tensor[...] area (zero for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise IoU.

    Args:
        boxes1 (Tensor[N, 4]): float xyxy boxes.
        boxes2 (Tensor[M, 4]): float xyxy boxes, same unit as ``boxes1``.
        eps: added to the union, so that two zero-area boxes have IoU 0 instead of NaN.

    Returns:
        Tensor[N, M]: ``iou[i, j] = |boxes1[i] n boxes2[j]| / (|boxes1[i] u boxes2[j]| + eps)``, in ``[0, 1]``.
    """
    area1 = box_area(boxes1)  # (N,)
    area2 = box_area(boxes2)  # (M,)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, M)
    union = area1[:, None] + area2[None, :] - inter
    return inter / (union + eps)


def enclosing_frame(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Express a broadcast pair of boxes in the frame of the box enclosing both (no gradient through the frame).

    boxes1, boxes2 (Tensor[..., 4]) xyxy, broadcastable -> two Tensor[..., 4]: ``(box - origin) / scale`` with
    ``origin`` the smallest x and y among the eight coordinates and ``scale`` the longer side of the enclosing box
    (at least the dtype's machine epsilon, so a pair of coincident points does not divide by zero).
    """
    b1, b2 = torch.broadcast_tensors(boxes1, boxes2)
    with torch.no_grad():
        xs = torch.stack((b1[..., 0], b1[..., 2], b2[..., 0], b2[..., 2]), dim=-1)  # (..., 4)
        ys = torch.stack((b1[..., 1], b1[..., 3], b2[..., 1], b2[..., 3]), dim=-1)  # (..., 4)
        x0, y0 = xs.amin(-1), ys.amin(-1)
        side = torch.maximum(xs.amax(-1) - x0, ys.amax(-1) - y0)
        scale = side.clamp(min=torch.finfo(side.dtype).eps)[..., None]  # (..., 1)
        origin = torch.stack((x0, y0, x0, y0), dim=-1)  # (..., 4)
    return (b1 - origin) / scale, (b2 - origin) / scale


def iou_and_union(b1: Tensor, b2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Aligned IoU and union of two same-shape Tensor[..., 4] xyxy -> (Tensor[...], Tensor[...])."""
    lt = torch.maximum(b1[..., :2], b2[..., :2])  # (..., 2)
    rb = torch.minimum(b1[..., 2:], b2[..., 2:])  # (..., 2)
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(b1) + box_area(b2) - inter
    return inter / (union + eps), union


def enclosing_wh(b1: Tensor, b2: Tensor) -> Tensor:
    """Width and height of the smallest box enclosing each aligned pair: Tensor[..., 4] x2 -> Tensor[..., 2]."""
    return torch.maximum(b1[..., 2:], b2[..., 2:]) - torch.minimum(b1[..., :2], b2[..., :2])


def centre_distance_ratio(b1: Tensor, b2: Tensor, enclosing: Tensor, eps: float) -> Tensor:
    """DIoU's penalty ``rho^2 / (c^2 + eps)``: Tensor[..., 4] x2, Tensor[..., 2] -> Tensor[...]."""
    centre_delta = (b1[..., :2] + b1[..., 2:] - b2[..., :2] - b2[..., 2:]) / 2  # (..., 2)
    rho2 = centre_delta.pow(2).sum(-1)
    c2 = enclosing.pow(2).sum(-1)
    return rho2 / (c2 + eps)


def aligned_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of aligned pairs.

    Args:
        boxes1, boxes2 (Tensor[..., 4]): float xyxy boxes with ``x1 <= x2, y1 <= y2``; broadcastable.
        eps: added to the union (in the pair's enclosing-box frame, see the module docstring).

    Returns:
        Tensor[...]: IoU in ``[0, 1]``; 0 for disjoint pairs and for pairs of zero-area boxes.
    """
    b1, b2 = enclosing_frame(boxes1, boxes2)
    return iou_and_union(b1, b2, eps)[0]


def aligned_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Generalized IoU of aligned pairs: ``IoU - (|C| - |union|) / |C|``, C the smallest enclosing box.

    boxes1, boxes2 (Tensor[..., 4]) float xyxy, broadcastable -> Tensor[...] in ``[-1, 1]``.
    """
    b1, b2 = enclosing_frame(boxes1, boxes2)
    iou, union = iou_and_union(b1, b2, eps)
    enclosing_area = enclosing_wh(b1, b2).prod(-1)
    return iou - (enclosing_area - union) / (enclosing_area + eps)


def aligned_diou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Distance IoU of aligned pairs: ``IoU - rho^2 / c^2`` (centre distance over enclosing diagonal, squared).

    boxes1, boxes2 (Tensor[..., 4]) float xyxy, broadcastable -> Tensor[...] in ``(-1, 1]``.
    """
    b1, b2 = enclosing_frame(boxes1, boxes2)
    iou = iou_and_union(b1, b2, eps)[0]
    return iou - centre_distance_ratio(b1, b2, enclosing_wh(b1, b2), eps)


def aspect_consistency(b1: Tensor, b2: Tensor, eps: float) -> Tensor:
    """CIoU's ``v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2``, with ``h + eps`` and ``w, h >= 0``.

    b1, b2 (Tensor[..., 4]) xyxy -> Tensor[...] in ``[0, 1]``.
    """
    wh1 = (b1[..., 2:] - b1[..., :2]).clamp(min=0)  # (..., 2)
    wh2 = (b2[..., 2:] - b2[..., :2]).clamp(min=0)  # (..., 2)
    angle1 = torch.atan(wh1[..., 0] / (wh1[..., 1] + eps))
    angle2 = torch.atan(wh2[..., 0] / (wh2[..., 1] + eps))
    return (4 / math.pi**2) * (angle2 - angle1).pow(2)


def aligned_ciou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of aligned pairs: ``IoU - rho^2 / c^2 - alpha * v``.

    ``v`` measures the difference of aspect ratios and ``alpha = v / (1 - IoU + v + eps)`` is computed without
    gradient (the trade-off weight of the CIoU paper, treated as a constant as in its code and in YOLOv5).

    boxes1, boxes2 (Tensor[..., 4]) float xyxy, broadcastable -> Tensor[...] in ``(-2, 1]``.
    """
    b1, b2 = enclosing_frame(boxes1, boxes2)
    iou = iou_and_union(b1, b2, eps)[0]
    distance = centre_distance_ratio(b1, b2, enclosing_wh(b1, b2), eps)
    v = aspect_consistency(b1, b2, eps)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - distance - alpha * v


def aligned_eiou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Efficient IoU of aligned pairs (Zhang et al., arXiv 2101.08158), as a similarity.

    ``IoU - rho^2 / c^2 - (w1 - w2)^2 / C_w^2 - (h1 - h2)^2 / C_h^2`` with ``C_w, C_h`` the width and height of
    the smallest enclosing box; the EIoU loss is ``1 - aligned_eiou``. Each denominator carries ``eps``, so a pair
    whose enclosing box has zero width (two zero-width boxes on one vertical line) has a zero width term.

    boxes1, boxes2 (Tensor[..., 4]) float xyxy, broadcastable -> Tensor[...] in ``(-3, 1]``.
    """
    b1, b2 = enclosing_frame(boxes1, boxes2)
    iou = iou_and_union(b1, b2, eps)[0]
    enclosing = enclosing_wh(b1, b2)  # (..., 2)
    distance = centre_distance_ratio(b1, b2, enclosing, eps)
    wh_delta = (b1[..., 2:] - b1[..., :2]) - (b2[..., 2:] - b2[..., :2])  # (..., 2)
    side = (wh_delta.pow(2) / (enclosing.pow(2) + eps)).sum(-1)
    return iou - distance - side


def gaussian_params(boxes: Tensor) -> Tensor:
    """NWD's Gaussian of a box, as the vector ``(cx, cy, w / 2, h / 2)``: ``W_2`` is the distance between two.

    boxes (Tensor[..., 4]) xyxy -> Tensor[..., 4]; a negative width or height counts as 0.
    """
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (..., 2)
    half_size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0) / 2  # (..., 2)
    return torch.cat((centre, half_size), -1)


def aligned_nwd(boxes1: Tensor, boxes2: Tensor, constant: float = NWD_CONSTANT, eps: float = 1e-7) -> Tensor:
    """Normalized Gaussian Wasserstein distance of aligned pairs: ``exp(-sqrt(W_2^2 + eps^2) / C)``.

    ``W_2 = ||(cx, cy, w/2, h/2) - (cx', cy', w'/2, h'/2)||`` (see the module docstring). ``eps`` keeps the
    gradient finite for identical boxes (the value there is ``exp(-eps / C)``, 1 for ``eps = 0``). The norm is
    taken as ``m * ||d / m||`` with ``m = max |d_i|`` (no gradient through ``m``), so no raw coordinate is
    squared: boxes ``1e30`` apart give 0 with finite gradients.

    Args:
        boxes1, boxes2 (Tensor[..., 4]): float xyxy boxes, broadcastable (``aligned_nwd(a[:, None], b[None])`` is
            the pairwise ``[N, M]``; :func:`box_nwd` computes it with less memory).
        constant: ``C > 0``, in the unit of the boxes; ``NWD = 1 / e`` at ``W_2 = C``.
        eps: ``>= 0``, in the unit of the boxes.

    Returns:
        Tensor[...]: NWD in ``(0, 1]`` (0 only by underflow), 1 for identical boxes when ``eps = 0``.
    """
    diff = gaussian_params(boxes1) - gaussian_params(boxes2)  # (..., 4) (dcx, dcy, dw / 2, dh / 2)
    with torch.no_grad():
        m = diff.abs().amax(-1).clamp(min=max(eps, torch.finfo(diff.dtype).tiny))  # (...,)
    w2 = m * ((diff / m[..., None]).pow(2).sum(-1) + (eps / m).pow(2)).sqrt()  # (...,)
    return torch.exp(-w2 / constant)


def box_nwd(boxes1: Tensor, boxes2: Tensor, constant: float = NWD_CONSTANT, eps: float = 0.0) -> Tensor:
    """Pairwise normalized Gaussian Wasserstein distance, ``exp(-sqrt(W_2^2 + eps^2) / C)``.

    The same value as :func:`aligned_nwd` on every pair (``box_nwd(a, b).diagonal() == aligned_nwd(a, b)`` for
    equal-length sets, up to rounding), computed as a Euclidean distance between the ``(cx, cy, w/2, h/2)`` rows
    (``torch.cdist``, without its matrix-product shortcut, which loses digits for near-identical boxes): the only
    ``[N, M]`` tensors are the distance and the result. Meant for assignment and NMS, which need no gradient.

    Worked example (``C = 12.8``): ``(0, 0, 4, 4)`` against itself: ``W_2 = 0``, NWD 1; against
    ``(5, 0, 9, 4)`` (IoU 0, a 1 px gap): ``W_2 = 5``, NWD ``exp(-5 / 12.8) = 0.6766``.

    Args:
        boxes1 (Tensor[N, 4]): float xyxy boxes.
        boxes2 (Tensor[M, 4]): float xyxy boxes, same unit as ``boxes1``.
        constant: ``C > 0``, in the unit of the boxes (default the paper's 12.8 px).
        eps: ``>= 0``; as in :func:`aligned_nwd` (pass the loss's ``eps`` to reproduce ``1 - nwd_loss``).

    Returns:
        Tensor[N, M]: ``nwd[i, j]`` in ``(0, 1]``, 1 for identical boxes when ``eps = 0``.
    """
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    gauss1 = gaussian_params(boxes1.to(dtype))  # (N, 4) (cx, cy, w/2, h/2)
    gauss2 = gaussian_params(boxes2.to(dtype))  # (M, 4)
    if gauss1.shape[0] == 0 or gauss2.shape[0] == 0:
        return gauss1.new_zeros(gauss1.shape[0], gauss2.shape[0])
    w2 = torch.cdist(gauss1, gauss2, compute_mode="donot_use_mm_for_euclid_dist")  # (N, M)
    if eps:
        w2 = torch.hypot(w2, torch.tensor(eps, dtype=w2.dtype, device=w2.device))
    return torch.exp(-w2 / constant)
