"""Rows of a flat ``Tensor[B, P, k]`` at a few (image, prior) pairs, with a sparse gradient.

A criterion reads its positive pairs' class logits and box regressions as rows of the head's ``(B, P, k)``
outputs. ``t[b, p]`` would send back a dense ``B x P x k`` gradient, mostly zeros: for an s-size model at 640 px,
batch 16, 80 classes, 129 MB written and copied again into the convolution's layout for a few hundred rows.
:func:`gather_rows` sends the M rows back as a sparse COO tensor instead;
:class:`detector.models.heads.split.SplitChannels` writes them straight into its per-level gradient buffer.
"""
from __future__ import annotations

import torch
from torch import Tensor


def gather_rows(t: Tensor, b: Tensor, p: Tensor, sparse_grad: bool = True) -> Tensor:
    """t (Tensor[B, P, k]) at the pairs (b (Tensor[M]), p (Tensor[M])) -> Tensor[M, k], the same values as
    ``t[b, p]``; with ``sparse_grad`` the gradient flows back to ``t`` as a sparse COO tensor of M rows (repeated
    pairs add up), otherwise as ``t[b, p]``'s dense one.

    Sparse gradients are meant for the outputs of :func:`~detector.models.heads.yolo.flatten_level_outputs`
    (``HeadOutputs.sparse_row_grad``); a leaf tensor would end up with a sparse ``.grad``."""
    return _GatherRows.apply(t, b, p) if sparse_grad and t.requires_grad else t[b, p]


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, b: Tensor, p: Tensor) -> Tensor:
        ctx.shape = t.shape
        ctx.save_for_backward(b, p)
        return t[b, p]  # (M, k)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:
        b, p = ctx.saved_tensors
        sparse = torch.sparse_coo_tensor(torch.stack((b, p)), grad, ctx.shape, check_invariants=False)
        return sparse, None, None


def to_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` whose backward also casts a sparse gradient (autograd's own cast accepts only dense ones).

    Under autocast the head's outputs are float16 / bfloat16 and the loss casts them to float32; the rows that
    :func:`gather_rows` reads from the float32 copy send back a sparse gradient, which must reach the half-precision
    outputs still sparse (``SplitChannels`` writes it into its buffer)."""
    if t.dtype == dtype:
        return t
    return _ToDtype.apply(t, dtype) if t.requires_grad else t.to(dtype)


class _ToDtype(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.dtype = t.dtype
        return t.to(dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        if grad.layout == torch.sparse_coo:
            return torch.sparse_coo_tensor(grad._indices(), grad._values().to(ctx.dtype), grad.shape,
                                           check_invariants=False), None
        return grad.to(ctx.dtype), None
