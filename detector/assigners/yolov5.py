"""YOLOv5's label assignment: anchor-ratio test plus the two nearest neighbour cells.

Semantics of ``build_targets`` in ultralytics/yolov5 ``utils/loss.py``, as a pure function of tensors.
Shape letters as in :mod:`detector.structures`; here also ``K`` = (anchor, gt) pairs passing the ratio
test at one level and ``O`` = 5 candidate cell offsets (own cell, left, up, right, down).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.boxes import xyxy_to_cxcywh
from detector.structures import Assignment, Predictions, Priors


def _level_anchors(priors: Priors, level: int) -> Tensor:
    """Tensor[A, 2] anchor ``(w, h)`` in pixels of one level, read from ``priors``."""
    if priors.level_anchors is not None:
        return priors.level_anchors[level]
    num_anchors, height, width = priors.level_shapes[level]
    start = priors.level_offsets[level]
    # the first prior of anchor a sits at start + a * H * W (order (A, H, W))
    return priors.anchors[start : start + num_anchors * height * width : height * width]  # (A, 2)


def assign_yolov5_ratio(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    anchor_t: float = 4.0,
    neighbour_offset: float = 0.5,
) -> Assignment:
    """Assign every ground truth to anchors of matching shape in its own cell and its nearest neighbours.

    For each level and each anchor of that level, a ground truth of size ``(w, h)`` passes when
    ``max(w / aw, aw / w, h / ah, ah / h) < anchor_t`` (strict). It is then assigned to its own
    cell ``(int(gx), int(gy))`` with ``(gx, gy) = centre / stride``, and, with ``g = neighbour_offset``
    and the grid of width ``W`` and height ``H``:

    * the left cell  ``int(gx - g)`` if ``gx % 1 < g`` and ``gx > 1``;
    * the right cell ``int(gx + g)`` if ``(W - gx) % 1 < g`` and ``W - gx > 1``
      (YOLOv5's inverse-coordinate form: for non-integral ``gx`` it reads ``gx % 1 > g``
      and ``gx < W - 1``);
    * the upper / lower cell likewise in ``y`` with ``H``.

    So each ground truth gets up to 3 cells x A anchors per level. All cell indices are clamped into
    the grid. Quirks kept from YOLOv5 on purpose: a centre exactly on a cell centre
    (``gx % 1 == 0.5``) gets no neighbour in that axis; a centre exactly on a cell border
    (``gx`` integral, ``1 < gx < W - 1``) gets the left cell and its own cell twice; a centre on the
    right image border (``gx == W``) is clamped into the last cell, which it gets twice (own cell
    clamped, and the left neighbour). Duplicate pairs are kept, as in YOLOv5.

    Worked example: one level, stride 8, ``(A, H, W) = (3, 10, 10)``, anchors
    ``(10, 13), (16, 30), (33, 23)`` px, one target ``(0, cls, 23, 41, 31, 47)``: centre ``(27, 44)``,
    size ``(8, 6)``. Ratios: anchor 0 ``max(1.25, 2.17) < 4`` passes; anchor 1 ``30 / 6 = 5`` and
    anchor 2 ``33 / 8 = 4.125`` fail. ``(gx, gy) = (3.375, 5.5)``: own cell ``(3, 5)``;
    ``3.375 % 1 = 0.375 < 0.5`` and ``3.375 > 1`` add the left cell ``(2, 5)``;
    ``(10 - 3.375) % 1 = 0.625`` adds no right cell; ``gy`` is on a cell centre, so no vertical
    neighbour. Result: ``prior_index = [(0 * 10 + 5) * 10 + 3, (0 * 10 + 5) * 10 + 2] = [53, 52]``,
    ``batch_index = [0, 0]``, ``gt_index = [0, 0]``.

    Args:
        priors (Priors): anchor priors of all levels (``priors.anchors`` must not be None).
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input-image pixels.
        batch_size (int): B; every ``image_index`` must lie in ``[0, B)``.
        anchor_t (float): ratio threshold (> 1); YOLOv5's hyperparameter ``anchor_t``.
        neighbour_offset (float): YOLOv5's bias ``g`` (0.5 gives the nearest neighbour cells).

    Returns:
        Assignment: pairs ``batch_index``, ``prior_index``, ``gt_index`` (Tensor[M] long, on the
        targets' device), ordered by level, then offset (own, left, up, right, down), then anchor,
        then ground truth; ``ignore``, ``negative`` and ``weight`` are None (every prior that is
        not in a pair is negative). Empty targets give :meth:`Assignment.empty`.
    """
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(
            f"assign_yolov5_ratio: targets must be Tensor[n, 6] = (image_index, class, x1, y1, x2, y2), "
            f"got shape {tuple(targets.shape)}"
        )
    if priors.anchors is None:
        raise ValueError(
            "assign_yolov5_ratio needs anchor priors (priors.anchors is None); use an anchor-based "
            "prior generator or a point-prior assigner"
        )
    if anchor_t <= 1:
        raise ValueError(f"assign_yolov5_ratio: anchor_t must be > 1 (YOLOv5 uses 4.0), got {anchor_t}")
    if not 0 < neighbour_offset <= 1:
        raise ValueError(
            f"assign_yolov5_ratio: neighbour_offset must be in (0, 1] (YOLOv5 uses 0.5), got {neighbour_offset}"
        )
    device = targets.device
    num_targets = targets.shape[0]
    if num_targets == 0 or len(priors) == 0:
        return Assignment.empty(device)

    image_index = targets[:, 0].long()  # (n,)
    if bool(((image_index < 0) | (image_index >= batch_size)).any()):
        raise ValueError(
            f"assign_yolov5_ratio: targets[:, 0] (image_index) must lie in [0, batch_size={batch_size}), "
            f"got range [{int(image_index.min())}, {int(image_index.max())}]"
        )
    centre_size = xyxy_to_cxcywh(targets[:, 2:6].float())  # (n, 4) cx, cy, w, h
    g = neighbour_offset
    # subtracted from (gx, gy): own cell, left, up, right, down
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * g

    batch_parts, prior_parts, gt_parts = [], [], []
    level_offsets = priors.level_offsets
    for level, (num_anchors, height, width) in enumerate(priors.level_shapes):
        start = level_offsets[level]
        stride = priors.strides[start].to(device=device, dtype=torch.float32)
        anchors = _level_anchors(priors, level).to(device=device, dtype=torch.float32)  # (A, 2)

        ratio = centre_size[None, :, 2:] / anchors[:, None, :]  # (A, n, 2)
        match = torch.maximum(ratio, 1 / ratio).amax(dim=-1) < anchor_t  # (A, n)
        anchor_idx, gt_idx = match.nonzero(as_tuple=True)  # (K,), (K,)

        gxy = centre_size[gt_idx, :2] / stride  # (K, 2) centre in grid units
        gxy_inverse = torch.tensor([width, height], device=device, dtype=torch.float32) - gxy  # (K, 2)
        low = (gxy % 1 < g) & (gxy > 1)  # (K, 2): left, up
        high = (gxy_inverse % 1 < g) & (gxy_inverse > 1)  # (K, 2): right, down
        use = torch.stack((torch.ones_like(low[:, 0]), low[:, 0], low[:, 1], high[:, 0], high[:, 1]))  # (O, K)
        offset_idx, pair_idx = use.nonzero(as_tuple=True)  # (M_l,), (M_l,)

        cell = (gxy[pair_idx] - offsets[offset_idx]).long()  # (M_l, 2), truncation as YOLOv5
        cell_x = cell[:, 0].clamp(0, width - 1)
        cell_y = cell[:, 1].clamp(0, height - 1)
        anchor = anchor_idx[pair_idx]
        gt = gt_idx[pair_idx]

        prior_parts.append(start + (anchor * height + cell_y) * width + cell_x)
        gt_parts.append(gt)
        batch_parts.append(image_index[gt])

    return Assignment(
        batch_index=torch.cat(batch_parts),
        prior_index=torch.cat(prior_parts),
        gt_index=torch.cat(gt_parts),
    )


class YOLOv5Assigner:
    """Callable wrapper of :func:`assign_yolov5_ratio` with the assigner interface of
    :mod:`detector.assigners.common`.

    ``pred`` is accepted and ignored: YOLOv5's assignment depends on ground-truth geometry only.
    """

    needs_predictions = False
    needs_anchors = True

    def __init__(self, anchor_t: float = 4.0, neighbour_offset: float = 0.5):
        if anchor_t <= 1:
            raise ValueError(f"YOLOv5Assigner: anchor_t must be > 1 (YOLOv5 uses 4.0), got {anchor_t}")
        if not 0 < neighbour_offset <= 1:
            raise ValueError(
                f"YOLOv5Assigner: neighbour_offset must be in (0, 1] (YOLOv5 uses 0.5), got {neighbour_offset}"
            )
        self.anchor_t = anchor_t
        self.neighbour_offset = neighbour_offset

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        return assign_yolov5_ratio(
            priors, targets, batch_size, anchor_t=self.anchor_t, neighbour_offset=self.neighbour_offset
        )

    def __repr__(self) -> str:
        return f"YOLOv5Assigner(anchor_t={self.anchor_t}, neighbour_offset={self.neighbour_offset})"
