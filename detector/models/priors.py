"""Prior generators: feature-map sizes -> :class:`detector.structures.Priors` in the documented flat order.

Letter convention (see ``detector/structures.py``): ``L`` levels, ``A`` anchors per cell at one level,
``H, W`` the size of one level's feature map, ``P`` priors over all levels.

Within level ``l`` priors are ordered ``(A, H, W)``: anchor major, then row, then column, so anchor ``a``
of cell ``(gy, gx)`` has the flat index ``level_offsets[l] + (a * H + gy) * W + gx``. This is exactly
the order of ``raw.view(B, A, K, H, W).permute(0, 1, 3, 4, 2).reshape(B, A * H * W, K)`` on a head's
``(B, A * K, H, W)`` output, levels concatenated finest first.

Generators are plain objects (not modules): they hold no learnt state, and cache the priors of the last
few ``(level shapes, device, dtype)`` they were asked for, since the priors are constants. Callers must
not modify the returned tensors in place.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from detector.structures import Priors

_CACHE_SIZE = 8


def _check_strides(strides: Sequence[int], where: str) -> tuple[int, ...]:
    out = tuple(int(s) for s in strides)
    if not out or any(s <= 0 for s in out) or any(float(s) != float(t) for s, t in zip(out, strides)):
        raise ValueError(f"{where}: strides must be a non-empty list of positive integers, got {list(strides)}")
    return out


def _check_level_shapes(level_shapes: Sequence[Sequence[int]], num_levels: int, where: str) -> list[tuple[int, int]]:
    shapes = [tuple(int(v) for v in hw) for hw in level_shapes]
    if len(shapes) != num_levels or any(len(hw) != 2 or hw[0] < 1 or hw[1] < 1 for hw in shapes):
        raise ValueError(
            f"{where}: expected {num_levels} level shapes (H, W) with H, W >= 1 (one per stride), "
            f"got {[tuple(hw) for hw in level_shapes]}"
        )
    return shapes  # type: ignore[return-value]


def _level_grid(num_anchors: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Cell coordinates ``(gx, gy)`` of one level in ``(A, H, W)`` order -> Tensor[A * H * W, 2]."""
    gy, gx = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )  # each (H, W)
    grid = torch.stack((gx, gy), dim=-1)  # (H, W, 2)
    return grid.unsqueeze(0).expand(num_anchors, h, w, 2).reshape(-1, 2)  # (A, H, W, 2) -> (A*H*W, 2)


class _PriorCache:
    """The priors of the last few ``(level shapes, device, dtype)`` keys, least recently used dropped first."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, Priors] = OrderedDict()

    def get(
        self,
        shapes: list[tuple[int, int]],
        device: torch.device | str,
        dtype: torch.dtype,
        build: Callable[[list[tuple[int, int]], torch.device, torch.dtype], Priors],
    ) -> Priors:
        """Cached ``build(shapes, device, dtype)``; returns a fresh Priors whose tensors are shared (read-only)."""
        device = torch.device(device)
        key = (tuple(shapes), str(device), dtype)
        priors = self._entries.get(key)
        if priors is None:
            priors = build(shapes, device, dtype)
            self._entries[key] = priors
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return dataclasses.replace(
            priors,
            level_shapes=list(priors.level_shapes),
            level_anchors=None if priors.level_anchors is None else list(priors.level_anchors),
        )


class AnchorPriorGenerator:
    """Anchor priors: ``A_l`` anchors of fixed ``(w, h)`` pixels at every cell of level ``l``.

    Args:
        anchors: one entry per level, each ``A_l`` anchors given as ``[[w, h], ...]`` or YOLOv5's flat
            ``[w0, h0, w1, h1, ...]``, in pixels of the network input.
        strides: stride in pixels of each level, e.g. ``(8, 16, 32)``.

    Example: ``AnchorPriorGenerator([[10, 13, 16, 30, 33, 23]], [8])([(2, 3)], "cpu", torch.float32)``
    gives ``P = 3 * 2 * 3 = 18`` priors; prior ``(1 * 2 + 1) * 3 + 2 = 11`` is anchor 1 ``(16, 30)`` at
    cell ``(gx, gy) = (2, 1)``, centre ``(20, 12)`` px.
    """

    def __init__(self, anchors: Sequence[Sequence[float]] | Sequence[Tensor], strides: Sequence[int]):
        self.strides = _check_strides(strides, "AnchorPriorGenerator")
        self._cache = _PriorCache()
        if len(anchors) != len(self.strides):
            raise ValueError(
                f"AnchorPriorGenerator: got {len(anchors)} anchor levels for {len(self.strides)} strides "
                f"{list(self.strides)}; give one list of anchors per stride"
            )
        self.anchors: list[Tensor] = [self._parse_level(a, i) for i, a in enumerate(anchors)]

    @staticmethod
    def _parse_level(level_anchors: Sequence[float] | Tensor, index: int) -> Tensor:
        """One level's anchors (flat ``[w0, h0, ...]`` or ``[[w, h], ...]``) -> Tensor[A, 2] float32 pixels."""
        t = torch.as_tensor(level_anchors, dtype=torch.float32).detach().cpu()
        if t.dim() == 1 and t.numel() % 2 == 0:
            t = t.reshape(-1, 2)  # (2A,) -> (A, 2)
        if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] == 0 or not bool((t > 0).all()):
            raise ValueError(
                f"AnchorPriorGenerator: anchors of level {index} must be A >= 1 positive (w, h) pairs in pixels, "
                f"as [[w, h], ...] or [w0, h0, w1, h1, ...]; got {torch.as_tensor(level_anchors).tolist()}"
            )
        return t.clone()

    @property
    def num_anchors(self) -> list[int]:
        """Anchors per cell at each level."""
        return [int(a.shape[0]) for a in self.anchors]

    def __call__(
        self, level_shapes: Sequence[Sequence[int]], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Priors:
        """level_shapes: ``(H, W)`` per level, finest first -> Priors over ``P = sum_l A_l * H_l * W_l``.

        ``grid`` (Tensor[P, 2]), ``strides`` (Tensor[P]) and ``anchors`` (Tensor[P, 2]) have ``dtype``;
        ``level`` and ``anchor_id`` (Tensor[P]) are long; all on ``device``.
        """
        shapes = _check_level_shapes(level_shapes, len(self.strides), "AnchorPriorGenerator")
        return self._cache.get(shapes, device, dtype, self._build)

    def _build(self, shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Priors:
        grids, strides, anchors, levels, anchor_ids, level_shapes, level_anchors = [], [], [], [], [], [], []
        for l, ((h, w), stride, anc) in enumerate(zip(shapes, self.strides, self.anchors)):
            a = anc.shape[0]
            n = a * h * w
            anc = anc.to(device=device, dtype=dtype)
            grids.append(_level_grid(a, h, w, device, dtype))
            strides.append(torch.full((n,), stride, device=device, dtype=dtype))
            anchors.append(anc[:, None, None, :].expand(a, h, w, 2).reshape(n, 2))  # (A, H, W, 2) -> (A*H*W, 2)
            levels.append(torch.full((n,), l, device=device, dtype=torch.long))
            ids = torch.arange(a, device=device, dtype=torch.long)
            anchor_ids.append(ids[:, None, None].expand(a, h, w).reshape(n))  # (A, H, W) -> (A*H*W,)
            level_shapes.append((a, h, w))
            level_anchors.append(anc)
        return Priors(
            grid=torch.cat(grids),
            strides=torch.cat(strides),
            anchors=torch.cat(anchors),
            level=torch.cat(levels),
            anchor_id=torch.cat(anchor_ids),
            level_shapes=level_shapes,
            level_anchors=level_anchors,
        )


class PointPriorGenerator:
    """Point priors for anchor-free heads (FCOS style): one prior per cell, ``anchors`` None.

    Args:
        strides: stride in pixels of each level.

    The layout is the anchor layout with ``A = 1``: ``level_shapes`` holds ``(1, H, W)``, ``anchor_id`` is 0.
    """

    def __init__(self, strides: Sequence[int]):
        self.strides = _check_strides(strides, "PointPriorGenerator")
        self._cache = _PriorCache()

    def __call__(
        self, level_shapes: Sequence[Sequence[int]], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Priors:
        """level_shapes: ``(H, W)`` per level, finest first -> Priors over ``P = sum_l H_l * W_l`` (no anchors)."""
        shapes = _check_level_shapes(level_shapes, len(self.strides), "PointPriorGenerator")
        return self._cache.get(shapes, device, dtype, self._build)

    def _build(self, shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Priors:
        grids, strides, levels = [], [], []
        for l, ((h, w), stride) in enumerate(zip(shapes, self.strides)):
            grids.append(_level_grid(1, h, w, device, dtype))
            strides.append(torch.full((h * w,), stride, device=device, dtype=dtype))
            levels.append(torch.full((h * w,), l, device=device, dtype=torch.long))
        level = torch.cat(levels)
        return Priors(
            grid=torch.cat(grids),
            strides=torch.cat(strides),
            anchors=None,
            level=level,
            anchor_id=torch.zeros_like(level),
            level_shapes=[(1, h, w) for h, w in shapes],
            level_anchors=None,
        )
