"""Peak extraction from class heat maps: CenterNet's replacement for NMS (Zhou et al. 2019, section 4).

Shape letters: ``B`` images, ``C`` classes, ``H, W`` the heat map, ``k`` peaks kept per image.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor


def heatmap_peaks(scores: Tensor, k: int = 100, kernel: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``k`` highest local maxima of each image's heat maps, over all classes and cells.

    A cell is kept when it equals the maximum of its ``kernel x kernel`` neighbourhood in its own class map
    (``max_pool2d`` with stride 1; cells outside the map do not count, so a border cell can be a peak); the
    others are set to 0, then the top ``k`` of the ``C * H * W`` values are taken. As in CenterNet, every cell
    of a plateau of equal values that is a local maximum is kept (each equals its neighbourhood's maximum), and
    so are the zero cells of an all-zero region: the scores are meant to be probabilities, and the caller drops
    low ones with a score threshold.

    Example: a 1 x 1 x 3 x 4 map ``[[0.1, 0.9, 0.2, 0.3], [0.1, 0.2, 0.1, 0.8], [0.0, 0.1, 0.1, 0.2]]``: 0.9 at
    ``(y, x) = (0, 1)`` and 0.8 at ``(1, 3)`` (on the border) are peaks; 0.3 at ``(0, 3)`` is next to 0.8 and is
    not. ``k = 2`` gives scores ``[0.9, 0.8]``, classes ``[0, 0]``, ``y = [0, 1]``, ``x = [1, 3]``.

    Args:
        scores (Tensor[B, C, H, W]): per-class scores (sigmoid of the head's class logits; logits work too, the
            order is the same, but then a suppressed cell's 0 may outrank negative logits).
        k: peaks per image, ``>= 1``; at most ``C * H * W`` are returned (fewer when the map is smaller).
        kernel: odd side of the neighbourhood (CenterNet: 3).

    Returns:
        ``(score, class, y, x)``, each Tensor[B, k']: the peak values in decreasing order (``scores``'s
        dtype) and their class, row and column (long), with ``k' = min(k, C * H * W)``.
    """
    if scores.ndim != 4:
        raise ValueError(f"heatmap_peaks: scores must be Tensor[B, C, H, W], got shape {tuple(scores.shape)}")
    for name, value, odd in (("k", k, False), ("kernel", kernel, True)):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not integral or value < 1 or (odd and value % 2 == 0):
            rule = "an odd positive integer (CenterNet: 3)" if odd else "a positive integer (CenterNet: 100)"
            raise ValueError(f"heatmap_peaks: {name} must be {rule}, got {value!r}")
    batch, classes, height, width = scores.shape
    local_max = F.max_pool2d(scores, kernel, stride=1, padding=kernel // 2)  # (B, C, H, W), -inf padding
    kept = torch.where(local_max == scores, scores, torch.zeros_like(scores))  # (B, C, H, W)
    top_score, index = kept.reshape(batch, -1).topk(min(int(k), classes * height * width), dim=1)  # (B, k')
    area = height * width
    cls = torch.div(index, area, rounding_mode="floor")
    cell = index - cls * area
    y = torch.div(cell, width, rounding_mode="floor")
    return top_score, cls, y, cell - y * width


def peak_detections(boxes: Tensor, scores: Tensor, level_shape: tuple[int, int, int], *, conf_thres: float = 0.001,
                    max_det: int = 100, kernel: int = 3) -> list[Tensor]:
    """Detections of a single-level point head by peak extraction instead of NMS (CenterNet's inference).

    Args:
        boxes (Tensor[B, P, 4]): decoded xyxy boxes of every prior, ``P = H * W`` in row-major order.
        scores (Tensor[B, P, C]): per-class probabilities.
        level_shape: the level's ``(A, H, W)``; ``A`` must be 1.

    Returns:
        list of B Tensor[D_b, 6] ``(x1, y1, x2, y2, score, class)`` by decreasing score, ``D_b <= max_det``, each a
        local maximum of its class map scoring ``> conf_thres``.
    """
    a, h, w = level_shape
    batch, num_priors, num_classes = scores.shape
    if a != 1 or num_priors != h * w:
        raise ValueError(f"peak_detections: needs one level of point priors (A = 1, P = H * W); got level (A, H, W) "
                         f"= {level_shape} for {num_priors} priors")
    maps = scores.view(batch, h, w, num_classes).permute(0, 3, 1, 2)  # (B, C, H, W)
    score, cls, y, x = heatmap_peaks(maps, k=max_det, kernel=kernel)  # (B, k) each
    prior = y * w + x  # (B, k)
    picked = boxes.gather(1, prior[..., None].expand(-1, -1, 4))  # (B, k, 4)
    rows = torch.cat((picked, score[..., None].to(boxes.dtype), cls[..., None].to(boxes.dtype)), -1)  # (B, k, 6)
    return [r[s > conf_thres] for r, s in zip(rows, score)]
