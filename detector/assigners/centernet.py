"""CenterNet's targets (Zhou et al. 2019, "Objects as Points"): one positive per box at the cell of its centre,
and a Gaussian heat map per class that softens the penalty of the negatives near a centre.

Shape letters as in :mod:`detector.structures` (``B`` images, ``C`` classes, ``P = H * W`` priors of the one level,
``M`` pairs, ``n`` target rows); ``N`` Gaussians to draw, ``K = 2 * R_max + 1`` the side of the drawing window.

Sizes follow CenterNet's released code (``src/lib/datasets/sample/ctdet.py``), in cells of the output map
(pixels / stride): the radius is ``max(0, floor(gaussian_radius(ceil(h), ceil(w))))``, the Gaussian is centred on
the integer cell ``floor(centre / stride)`` with ``sigma = (2 r + 1) / 6`` and cut to the square
``|dx|, |dy| <= r``, and overlapping Gaussians of one class combine by their maximum. Two deliberate differences:
the boxes are not clipped to ``W - 1`` / ``H - 1`` cells first (CenterNet clips the right and bottom edges of
its boxes to the last cell's index); only the centre cell is clamped into the map. CenterNet also zeroes the
window values below ``machine eps * peak``; inside the square the smallest value is ``exp(-36 r^2 / (2r + 1)^2)
> exp(-9)``, so that never happens and is not done.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from detector.assigners.common import check_targets
from detector.structures import Assignment, Predictions, Priors

RADIUS_RULES = ("centernet", "corrected")


def gaussian_radius(height: Tensor | float, width: Tensor | float, min_overlap: float = 0.7,
                    rule: str = "centernet") -> Tensor:
    """CornerNet's radius (Law & Deng 2018): how far a box's corners may move and keep IoU >= ``min_overlap``.

    With ``o = min_overlap``, ``h, w`` the box size, three ways to move the corners by ``r`` give three quadratics
    in ``r`` (standard form ``a r^2 + b r + c = 0``):

    1. one corner in, one out, box ``(w - r) x (h - r)`` shifted: IoU ``(w-r)(h-r) / (2wh - (w-r)(h-r)) = o``
       -> ``r^2 - (h + w) r + wh (1 - o) / (1 + o) = 0``;
    2. both corners in, box ``(w - 2r) x (h - 2r)``: ``(w-2r)(h-2r) / wh = o``
       -> ``4 r^2 - 2 (h + w) r + (1 - o) wh = 0``;
    3. both corners out, box ``(w + 2r) x (h + 2r)``: ``wh / ((w+2r)(h+2r)) = o``
       -> ``4 o r^2 + 2 o (h + w) r - (1 - o) wh = 0``.

    ``rule="corrected"`` (the paper's algebra: CornerNet's later fix, mmdetection's ``gaussian_radius``) takes
    the smaller root of 1 and 2 and the positive root of 3, ``(-b -+ sqrt(b^2 - 4ac)) / (2a)``, and returns the
    smallest of the three. ``rule="centernet"`` (the default) is CenterNet's released code, inherited from
    CornerNet's first release: every root is ``(-b + sqrt(b^2 - 4ac)) / 2``, the larger root and not divided by
    ``a``; the first two are then at least ``(h + w) / 2``, so the third always wins and the radius is
    ``sqrt(o^2 (h + w)^2 + 4 o (1 - o) hw) - o (h + w)``, ``4 o`` times the corrected case-3 root. CenterNet's
    reported results used it (its authors, xingyizhou/CenterNet issue 273, heard of no gain from the fix).

    Worked values: a square of side ``a``: ``centernet`` gives ``2 a (sqrt(o) - o)``, ``corrected`` gives
    case 2, ``a (1 - sqrt(o)) / 2``; at ``o = 0.7``, ``a = 10``: 2.7332 and 0.8167.

    Args:
        height, width (Tensor[...] or float): box sizes (CenterNet: output-map cells, rounded up); broadcast.
        min_overlap: ``o`` in ``(0, 1)``.
        rule: ``"centernet"`` or ``"corrected"``.

    Returns:
        Tensor[...] float radius (not rounded; CenterNet floors it and clamps at 0).
    """
    if rule not in RADIUS_RULES:
        raise ValueError(f"gaussian_radius: rule must be one of {list(RADIUS_RULES)}, got {rule!r}")
    if not 0.0 < float(min_overlap) < 1.0:
        raise ValueError(f"gaussian_radius: min_overlap must lie in (0, 1) (CenterNet: 0.7), got {min_overlap!r}")
    h, w = torch.as_tensor(height), torch.as_tensor(width)
    if not h.is_floating_point():
        h = h.float()
    o = float(min_overlap)
    s, area = h + w, h * w
    root3 = (torch.sqrt((o * s) ** 2 + 4 * o * (1 - o) * area) - o * s)  # (-b + sqrt(b^2 - 4ac)) / 2 of case 3
    if rule == "centernet":
        return root3
    r1 = (s - torch.sqrt(s ** 2 - 4 * area * (1 - o) / (1 + o))) / 2
    r2 = (2 * s - torch.sqrt(4 * s ** 2 - 16 * (1 - o) * area)) / 8
    return torch.minimum(torch.minimum(r1, r2), root3 / (4 * o))


def render_gaussian_heatmap(
    centers: Tensor, radius: Tensor, image: Tensor, classes: Tensor, batch_size: int, num_classes: int,
    height: int, width: int, dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw one Gaussian per object into a ``(B, C, H, W)`` map, the maximum where objects of a class overlap.

    Object ``i`` adds ``exp(-((x - gx)^2 + (y - gy)^2) / (2 sigma^2))`` with ``sigma = (2 r + 1) / 6`` on the cells
    ``|x - gx| <= r, |y - gy| <= r`` inside the map of image ``image[i]``, class ``classes[i]``; its centre cell
    holds exactly 1. Radius 0 marks the centre cell alone. Vectorised: every object is evaluated on a shared
    ``K x K`` window (``K = 2 max(r) + 1``), masked to its own square, and scattered with ``amax``.

    Example: radius 1 (sigma 0.5) at ``(gx, gy) = (0, 0)`` of a 3 x 3 map: ``[[1, e^-2, 0], [e^-2, e^-4, 0],
    [0, 0, 0]]``.

    Args:
        centers (Tensor[N, 2] long): ``(gx, gy)`` cells, inside the map.
        radius (Tensor[N] long): radii in cells, ``>= 0``.
        image (Tensor[N] long), classes (Tensor[N] long): in ``[0, B)`` and ``[0, C)``.

    Returns:
        Tensor[B, C, H, W] of ``dtype``, 0 where no object reaches: a view of channels-last ``(B, H, W, C)``
        memory, so that ``.permute(0, 2, 3, 1).reshape(B, H * W, C)`` (flat prior order) is free.
    """
    out = torch.zeros(batch_size, height, width, num_classes, dtype=dtype, device=centers.device)  # (B, H, W, C)
    if centers.shape[0] == 0:
        return out.permute(0, 3, 1, 2)
    if bool((radius < 0).any()):
        raise ValueError(f"render_gaussian_heatmap: radius must be >= 0, got min {int(radius.min())}")
    r_max = int(radius.max())
    d = torch.arange(-r_max, r_max + 1, device=centers.device)  # (K,)
    dx, dy = d[None, None, :], d[None, :, None]  # (1, 1, K), (1, K, 1)
    r = radius[:, None, None]  # (N, 1, 1)
    sigma = (2 * r + 1).to(dtype) / 6
    value = torch.exp(-(dx * dx + dy * dy).to(dtype) / (2 * sigma * sigma))  # (N, K, K)
    x = centers[:, 0, None, None] + dx  # (N, 1, K)
    y = centers[:, 1, None, None] + dy  # (N, K, 1)
    inside = (dx.abs() <= r) & (dy.abs() <= r) & (x >= 0) & (x < width) & (y >= 0) & (y < height)  # (N, K, K)
    row = image[:, None, None] * height + y  # (N, K, 1) index of the (b, y) row
    flat = (row * width + x) * num_classes + classes[:, None, None]  # (N, K, K) into (B, H, W, C)
    out.view(-1).scatter_reduce_(0, flat[inside], value[inside], reduce="amax", include_self=True)
    return out.permute(0, 3, 1, 2)


def _check_single_level(priors: Priors, where: str) -> tuple[int, int]:
    if priors.num_levels != 1 or priors.level_shapes[0][0] != 1:
        raise ValueError(
            f"{where}: CenterNet needs one level of point priors (one prior per cell, e.g. "
            f"PointPriorGenerator([4])), got level shapes (A, H, W) = {priors.level_shapes}"
        )
    return priors.level_shapes[0][1], priors.level_shapes[0][2]


def assign_centernet(
    priors: Priors, targets: Tensor, batch_size: int, num_classes: int, min_overlap: float = 0.7,
    radius_rule: str = "centernet",
) -> Assignment:
    """One positive pair per box at the cell holding its centre, and the Gaussian class heat map.

    With ``s`` the stride, a box ``(x1, y1, x2, y2)`` has centre cell ``(floor((x1 + x2) / 2s), floor((y1 + y2) /
    2s))`` (clamped into the map), prior ``gy * W + gx``, and radius ``max(0, floor(gaussian_radius(ceil(h / s),
    ceil(w / s))))``. Boxes with zero width or height get neither a pair nor a Gaussian (CenterNet skips them).

    Two boxes of one image whose centres fall in one cell both keep their pair, as in CenterNet's released code
    (its per-object ``ind`` / ``wh`` / ``reg`` slots): the size and offset losses then pull the one prediction
    towards both boxes. In the heat map they are one peak (value 1) if their class is the same, two peaks
    (one per class channel) otherwise; the number of ``heatmap == 1`` cells, the focal loss's positives, can
    therefore be smaller than the number of pairs.

    Worked example: stride 4 on a 32 x 32 input (8 x 8 cells), box ``(0, 4, 24, 20)`` of class 1: centre
    ``(12, 12)`` px -> cell ``(3, 3)``, prior 27; size ``6 x 4`` cells, radius ``floor(sqrt(0.49 * 100 + 0.84 *
    24) - 7) = floor(1.316) = 1``, sigma 0.5: ``heatmap[0, 27, 1] = 1``, its 4 side neighbours ``e^-2``, its 4
    diagonal neighbours ``e^-4``, everything else 0.

    Args:
        priors (Priors): one level of point priors (``A = 1``); raises ValueError otherwise.
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input pixels; classes in ``[0, C)``.
        batch_size (int): B.
        num_classes (int): C, the channels of the heat map.
        min_overlap, radius_rule: passed to :func:`gaussian_radius`.

    Returns:
        Assignment: pairs (Tensor[M] long) ordered by image, then prior, then target row;
        ``extras["heatmap"]`` (Tensor[B, P, C] float, flat prior order ``gy * W + gx``) the focal-loss target.
    """
    where = "assign_centernet"
    check_targets(targets, batch_size, where)
    height, width = _check_single_level(priors, where)
    device = targets.device
    dtype = torch.promote_types(targets.dtype, torch.float32)
    classes = targets[:, 1].long()
    if targets.shape[0] and bool(((classes < 0) | (classes >= num_classes)).any()):
        raise ValueError(
            f"{where}: targets[:, 1] (class) must lie in [0, num_classes={num_classes}), got range "
            f"[{int(classes.min())}, {int(classes.max())}]"
        )
    stride = float(priors.strides[0])
    boxes = targets[:, 2:6].to(dtype) / stride  # (n, 4) in cells
    size = boxes[:, 2:] - boxes[:, :2]  # (n, 2) w, h
    rows = ((size > 0).all(dim=1)).nonzero().squeeze(1)  # (M,) the drawable boxes
    image = targets[rows, 0].long()  # (M,)
    centre = (boxes[rows, :2] + boxes[rows, 2:]) / 2  # (M, 2)
    limit = torch.tensor([width - 1, height - 1], device=device)
    cell = torch.minimum(centre.floor().long().clamp(min=0), limit)  # (M, 2) (gx, gy)
    radius = gaussian_radius(size[rows, 1].ceil(), size[rows, 0].ceil(), min_overlap, radius_rule)
    radius = radius.floor().clamp(min=0).long()  # (M,)
    heat = render_gaussian_heatmap(cell, radius, image, classes[rows], batch_size, num_classes, height, width,
                                   dtype)  # (B, C, H, W)
    heatmap = heat.permute(0, 2, 3, 1).reshape(batch_size, height * width, num_classes)  # (B, P, C), a view

    prior = cell[:, 1] * width + cell[:, 0]  # (M,)
    order = torch.argsort(image * (height * width) + prior, stable=True)  # by image, prior, then row
    result = Assignment(batch_index=image[order], prior_index=prior[order], gt_index=rows[order])
    result.extras["heatmap"] = heatmap
    return result


class CenterNetAssigner:
    """Callable wrapper of :func:`assign_centernet` with the assigner interface of :mod:`detector.assigners.common`.

    Args:
        num_classes: C, the channels of ``extras["heatmap"]``.
        min_overlap: :func:`gaussian_radius`'s IoU (CenterNet: 0.7).
        radius_rule: ``"centernet"`` (released code, default) or ``"corrected"`` (the paper's algebra).

    ``pred`` is accepted and ignored: the targets depend on ground-truth geometry only.
    """

    needs_predictions = False
    needs_anchors = False

    def __init__(self, num_classes: int, min_overlap: float = 0.7, radius_rule: str = "centernet") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"CenterNetAssigner: num_classes must be a positive integer, got {num_classes!r}")
        gaussian_radius(1.0, 1.0, min_overlap, radius_rule)  # validates both
        self.num_classes = int(num_classes)
        self.min_overlap = float(min_overlap)
        self.radius_rule = radius_rule

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        return assign_centernet(priors, targets, batch_size, self.num_classes, self.min_overlap, self.radius_rule)

    def __repr__(self) -> str:
        return (f"CenterNetAssigner(num_classes={self.num_classes}, min_overlap={self.min_overlap}, "
                f"radius_rule={self.radius_rule!r})")
