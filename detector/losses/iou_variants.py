"""IoU-family box losses with a new penalty term: SIoU, WIoU's distance attention, MPDIoU, Shape-IoU, NWD, and
mmdetection's CIoU.

Same contract as :mod:`detector.losses.box`: ``fn(pred, target, *, reduction="none", eps=1e-7, **params)`` with
``pred, target (Tensor[N, 4])`` xyxy in grid-cell units -> ``Tensor[N]`` (or a scalar for ``"mean"`` / ``"sum"``).

Notation per pair: ``b`` the prediction, ``b_gt`` the target; ``(cx, cy, w, h)`` centre and size; ``C_w, C_h`` the
width and height of the smallest box enclosing both and ``c^2 = C_w^2 + C_h^2``; ``dx, dy`` the centre offset.

Frames: ``siou``, ``shape_iou``, ``ciou_mmdet`` and the WIoU terms are unchanged by moving and scaling both boxes
together, so each pair is evaluated in its enclosing-box frame (:mod:`detector.ops.boxes`: no square overflows, and
``eps`` is relative to the pair). ``mpdiou`` compares corners with the image size and ``nwd`` distances with a
constant, both absolute: they divide the coordinate differences first and never square a raw coordinate.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.losses.reduction import reduce_loss
from detector.ops.boxes import (
    aspect_consistency,
    centre_distance_ratio,
    enclosing_frame,
    enclosing_wh,
    iou_and_union,
    aligned_iou,
    aligned_nwd,
)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """boxes (Tensor[..., 4]) xyxy -> (centre Tensor[..., 2], size Tensor[..., 2] with negative sides clamped to 0)."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)


def siou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7,
              theta: float = 4.0) -> Tensor:
    """SIoU loss of Gevorgyan 2022 ("SIoU Loss: More Powerful Learning for Bounding Box Regression", arXiv
    2205.12740): ``1 - IoU + (Delta + Omega) / 2``.

    * angle cost ``Lambda = 1 - 2 sin^2(arcsin(|dy| / sigma) - pi/4)`` with ``sigma`` the centre distance. With
      ``a = arcsin(|dy| / sigma)`` this is ``cos(2a - pi/2) = sin 2a = 2 |dx| |dy| / sigma^2``, computed in that
      form (finite at ``sigma = 0``, where it is 0): 0 along an axis, 1 at 45 degrees.
    * distance cost ``Delta = sum_{x,y} (1 - exp(-gamma rho_t))``, ``rho_x = (dx / C_w)^2``, ``rho_y = (dy / C_h)^2``,
      ``gamma = 2 - Lambda``: an offset at 45 degrees costs less than the same offset along an axis.
    * shape cost ``Omega = sum_{w,h} (1 - exp(-omega_t))^theta``, ``omega_w = |w - w_gt| / max(w, w_gt)``.

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 3)``. ``theta`` (the paper's range 2..6, 4 by default)
    weighs the shape cost.
    """
    if theta <= 0:
        raise ValueError(f"siou theta must be > 0; got {theta}")
    b, t = enclosing_frame(pred, target)
    iou = iou_and_union(b, t, eps)[0]  # (N,)
    centre_b, size_b = _centre_size(b)  # (N, 2) each
    centre_t, size_t = _centre_size(t)
    d = centre_t - centre_b  # (N, 2) dx, dy
    angle = 2 * (d[..., 0] * d[..., 1]).abs() / (d.pow(2).sum(-1) + eps)  # (N,) sin 2a
    rho = (d / (enclosing_wh(b, t) + eps)).pow(2)  # (N, 2)
    distance = (1 - torch.exp(-(2 - angle)[..., None] * rho)).sum(-1)
    omega = (size_b - size_t).abs() / (torch.maximum(size_b, size_t) + eps)  # (N, 2)
    shape = (1 - torch.exp(-omega)).pow(theta).sum(-1)
    return reduce_loss(1 - iou + (distance + shape) / 2, reduction)


def wiou_v1_terms(pred: Tensor, target: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """The two factors of WIoU v1 (Tong et al. 2023, "Wise-IoU", arXiv 2301.10051): ``L_IoU = 1 - IoU`` and the
    distance attention ``R_WIoU = exp(((cx - cx_gt)^2 + (cy - cy_gt)^2) / (C_w^2 + C_h^2)*)``.

    ``*``: the enclosing box's ``C_w^2 + C_h^2`` is detached, as in the paper (it would otherwise be pushed to grow).
    ``R`` lies in ``[1, e)``. pred, target (Tensor[N, 4]) xyxy -> (Tensor[N], Tensor[N]).
    WIoU v1 is ``R * L_IoU``; v2 and v3 multiply it by a focusing factor of ``L_IoU`` over its running mean, which is
    state: :class:`detector.losses.stateful.WIoULoss` (config name ``wiou``).
    """
    b, t = enclosing_frame(pred, target)
    iou = iou_and_union(b, t, eps)[0]  # (N,)
    rho2 = (_centre_size(b)[0] - _centre_size(t)[0]).pow(2).sum(-1)  # (N,)
    c2 = enclosing_wh(b, t).pow(2).sum(-1).detach()  # (N,)
    return 1 - iou, torch.exp(rho2 / (c2 + eps))


def mpdiou_loss(pred: Tensor, target: Tensor, *, image_size: Tensor | float, reduction: str = "none",
                eps: float = 1e-7) -> Tensor:
    """MPDIoU loss of Ma & Xu 2023 ("MPDIoU: A Loss for Efficient and Accurate Bounding Box Regression", arXiv
    2307.07662): ``1 - IoU + d_1^2 / (W^2 + H^2) + d_2^2 / (W^2 + H^2)``.

    ``d_1``, ``d_2``: distances between the top-left corners and between the bottom-right corners of the two boxes;
    ``W, H``: the input image's width and height (here a square of side ``S``: ``W^2 + H^2 = 2 S^2``). Two
    predictions with the same IoU but corners moved differently get different losses.

    Args:
        pred, target (Tensor[N, 4]): xyxy boxes.
        image_size (Tensor[N] | float): side ``S`` of the square network input in the unit of the boxes (the
            criterion passes ``image_size / stride``, grid cells of each pair's level).

    Returns:
        Tensor[N] (``eps`` guards the IoU's union).
    """
    size = torch.as_tensor(image_size, dtype=pred.dtype, device=pred.device)
    size = size.reshape(-1, 1) if size.dim() else size  # (N, 1) or ()
    corners = ((pred - target) / size).pow(2).sum(-1) / 2  # (d_1^2 + d_2^2) / (2 S^2), no raw square
    return reduce_loss(1 - aligned_iou(pred, target, eps) + corners, reduction)


def shape_iou_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7,
                   scale: float = 0.0) -> Tensor:
    """Shape-IoU loss of Zhang & Zhang 2023 ("Shape-IoU: More Accurate Metric considering Bounding Box Shape and
    Scale", arXiv 2312.17663): ``1 - IoU + D_shape + Omega_shape / 2``.

    The target's shape weighs each direction: ``ww = 2 w_gt^s / (w_gt^s + h_gt^s)``, ``hh = 2 h_gt^s / (w_gt^s +
    h_gt^s)`` with ``s = scale`` (0: ``ww = hh = 1``; the paper ties it to the scale of the dataset's objects);
    ``D_shape = (hh dx^2 + ww dy^2) / c^2``; ``Omega_shape = sum_{w,h} (1 - exp(-omega_t))^4`` with
    ``omega_w = hh |w - w_gt| / max(w, w_gt)`` and ``omega_h = ww |h - h_gt| / max(h, h_gt)``. For a wide target
    (``w_gt > h_gt``, ``s > 0``) ``hh < 1 < ww``: an offset along the short side costs more.

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N].
    """
    if scale < 0:
        raise ValueError(f"shape_iou scale must be >= 0; got {scale}")
    b, t = enclosing_frame(pred, target)
    iou = iou_and_union(b, t, eps)[0]  # (N,)
    centre_b, size_b = _centre_size(b)  # (N, 2) each
    centre_t, size_t = _centre_size(t)
    power = size_t.pow(scale)  # (N, 2) w_gt^s, h_gt^s (target: no gradient needed)
    ww, hh = (2 * power / (power.sum(-1, keepdim=True) + eps)).unbind(-1)  # (N,) each
    d2 = (centre_t - centre_b).pow(2)  # (N, 2)
    distance = (hh * d2[..., 0] + ww * d2[..., 1]) / (enclosing_wh(b, t).pow(2).sum(-1) + eps)
    omega = (size_b - size_t).abs() / (torch.maximum(size_b, size_t) + eps)  # (N, 2)
    omega = omega * torch.stack((hh, ww), -1)
    shape = (1 - torch.exp(-omega)).pow(4).sum(-1)
    return reduce_loss(1 - iou + distance + 0.5 * shape, reduction)


def nwd_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7,
             constant: float = 1.6) -> Tensor:
    """Normalized Wasserstein Distance loss of Wang et al. 2021 ("A Normalized Gaussian Wasserstein Distance for
    Tiny Object Detection", arXiv 2110.13389): ``1 - exp(-W_2 / C)``.

    Each box is the 2-D Gaussian ``N((cx, cy), diag(w^2, h^2) / 4)``; the 2-Wasserstein distance of two such
    Gaussians is ``W_2 = ||(cx, cy, w/2, h/2) - (cx_gt, cy_gt, w_gt/2, h_gt/2)||``, taken here as
    ``sqrt(W_2^2 + eps^2)`` so that its gradient is finite for identical boxes (value ``1 - exp(-eps / C)`` there).
    Unlike the IoU family it is smooth and non-zero in gradient for disjoint and nested boxes, and it does not
    collapse for tiny boxes, whose IoU jumps with a one-pixel shift.

    ``constant`` (C) is in the unit of the boxes, which the criterion gives in **grid cells of each pair's level**:
    C cells are ``C * stride`` pixels, so one C is a pixel constant that grows with the level as the objects
    assigned to it do. The paper sets C to the dataset's mean object size (12.8 px on AI-TOD); the default 1.6 is
    those 12.8 px on the stride-8 level where tiny objects land. A loss is ``1 - e^-1 = 0.63`` at ``W_2 = C``.

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 1)``. The similarity is
    :func:`detector.ops.boxes.aligned_nwd` (its pairwise form :func:`detector.ops.boxes.box_nwd` serves NMS and
    the assigners, in pixels, with ``C = 12.8`` px).
    """
    if constant <= 0:
        raise ValueError(f"nwd constant must be > 0; got {constant}")
    return reduce_loss(1 - aligned_nwd(pred, target, constant, eps), reduction)


def ciou_mmdet_loss(pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """mmdetection's CIoU loss (``mmdet.models.losses.CIoULoss``): ``1 - clamp(IoU - rho^2 / c^2 - a v, -1, 1)``
    with the trade-off weight ``a = v / (1 - IoU + v)`` only where ``IoU > 0.5`` and ``a = 0`` elsewhere.

    The CIoU authors' own code (Zheng et al., the DIoU / CIoU repositories) and mmdetection drop the aspect term
    until the boxes overlap well (``IoU <= 0.5``: "the effect of aspect ratio is neglected"); YOLOv5, torchvision
    and ``ciou`` here keep ``a = v / (1 - IoU + v)`` everywhere. At or below IoU 0.5 this loss therefore equals
    ``diou``; above it, ``ciou``. ``a`` carries no gradient in both. The clamp of mmdetection is kept; it cannot
    bite in practice (the similarity stays above -1 once ``a = 0`` below IoU 0.5).

    pred, target (Tensor[N, 4]) xyxy -> Tensor[N] in ``[0, 2]``.
    """
    b, t = enclosing_frame(pred, target)
    iou = iou_and_union(b, t, eps)[0]  # (N,)
    distance = centre_distance_ratio(b, t, enclosing_wh(b, t), eps)
    v = aspect_consistency(b, t, eps)
    with torch.no_grad():
        alpha = torch.where(iou > 0.5, v / (v - iou + (1 + eps)), torch.zeros_like(v))
    return reduce_loss(1 - (iou - distance - alpha * v).clamp(min=-1.0, max=1.0), reduction)
