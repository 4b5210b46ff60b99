"""The copy between the head's per-level convolution outputs and the flat HeadOutputs tensors, and back.

:class:`SplitChannels` turns the levels into one ``Tensor[B, P, k]`` per output kind (box, objectness, classes, ...)
and writes their gradients back into one buffer per level in the convolution's layout. :func:`detector.ops.rows.gather_rows`
reads the rows of a few priors (a criterion's positive pairs) and hands their gradient back as a sparse tensor,
which ``SplitChannels`` writes straight into that buffer: no ``B x P x C`` zero tensor and no second full-size copy.

A slice marked lazy is not copied at all: :class:`LevelRows` reads the rows a criterion asks for straight from the
levels, for a criterion that reads class logits only at its positive pairs (YOLO heads under the YOLOv5, v3 and
v2 assigners: 80 of an 85-channel output never copied).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _add_rows(level: Tensor, rows: Tensor, start: int, n: int) -> None:
    """level (Tensor[B, A, H, W, k] view of a gradient buffer) += the rows of sparse ``rows`` (COO over (B, P), k
    dense values per row) whose prior falls in this level's span ``[start, start + n)`` of the flat order."""
    _, a, h, w, _ = level.shape
    index, values = rows._indices(), rows._values()  # (2, M), (M, k); uncoalesced: repeats are added below
    b, p = index[0], index[1]
    inside = (p >= start) & (p < start + n)
    b, local, values = b[inside], p[inside] - start, values[inside]
    anchor, cell = local // (h * w), local % (h * w)  # the flat order within a level: (a * H + gy) * W + gx
    level.index_put_((b, anchor, cell // w, cell % w), values.to(level.dtype), accumulate=True)


class SplitChannels(torch.autograd.Function):
    """Per-level head outputs -> one flat tensor per output kind, each written once, and back.

    Forward: levels ``Tensor[B, A, H, W, K]`` (views of the convolutions' ``(B, A * K, H, W)`` outputs) -> for each
    channel slice (box, obj, classes, ...) a ``Tensor[B, P, k]`` that is the transposed view of a ``(B, k, P)``
    buffer: the copy moves whole ``H * W`` rows of the convolution's layout instead of transposing every channel.
    Backward: the slices' gradients are written into one buffer per level laid out like the convolution's output
    (``(B, A, K, H, W)``, returned as its ``(B, A, H, W, K)`` view), so the gradient reaches the convolution
    without the full-size zero tensors and sums that autograd builds for slices of one concatenated tensor.
    Profile that justified it (one CPU thread, s-size outputs, batch 16, 640 px, flatten + YOLOv5 criterion
    forward and backward): 210 ms of zero fills and 81 ms of concatenation out of 397 ms; with this function and
    the criterion decoding only the positive pairs, the step went from 634 ms to 237 ms measured side by side
    (``docs/benchmarks.md``).

    A ``lazy`` slice gets no copy: its output is a NaN placeholder of the right shape (``Tensor[B, P, k]``, one
    element expanded) whose values are read through :class:`LevelRows` and whose gradient, the sparse rows of
    :class:`_LevelRowsGather`, comes back here like any other; a dense read of it gives NaN, never silent zeros.
    """

    @staticmethod
    def forward(ctx, slices: tuple[slice, ...], lazy: tuple[bool, ...], *levels: Tensor) -> tuple[Tensor, ...]:
        batch = levels[0].shape[0]
        counts = [t.shape[1] * t.shape[2] * t.shape[3] for t in levels]  # A * H * W per level
        ctx.slices, ctx.shapes = slices, [t.shape for t in levels]
        ctx.dtype, ctx.device = levels[0].dtype, levels[0].device
        outs = []
        for sl, deferred in zip(slices, lazy):
            k = sl.stop - sl.start
            if deferred:
                outs.append(levels[0].new_full((1, 1, 1), float("nan")).expand(batch, sum(counts), k))
                continue
            out = levels[0].new_empty(batch, k, sum(counts))  # (B, k, P)
            start = 0
            for t, n in zip(levels, counts):
                b, a, h, w, _ = t.shape
                src = t[..., sl].permute(0, 4, 1, 2, 3)  # (B, k, A, H, W): H * W rows contiguous in the conv output
                out[:, :, start:start + n].view(b, k, a, h, w).copy_(src)
                start += n
            outs.append(out.transpose(1, 2))  # (B, P, k) view
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        level_grads, start = [], 0
        for b, a, h, w, k_all in ctx.shapes:
            n = a * h * w
            buf = torch.empty(b, a, k_all, h, w, dtype=ctx.dtype, device=ctx.device)  # the convolution's layout
            for sl, g in zip(ctx.slices, grads):
                if g is None:
                    buf[:, :, sl].zero_()
                elif g.layout == torch.sparse_coo:  # rows of a few priors (gather_rows): zeros, then those rows
                    buf[:, :, sl].zero_()
                    _add_rows(buf.permute(0, 1, 3, 4, 2)[..., sl], g, start, n)
                else:  # (B, n, k) -> (B, A, k, H, W), one strided copy whichever layout the gradient has
                    buf[:, :, sl].copy_(_level_view(g[:, start:start + n], a, h, w))
            level_grads.append(buf.permute(0, 1, 3, 4, 2))  # (B, A, H, W, K) view, as the input
            start += n
        return (None, None, *level_grads)


def _level_view(g: Tensor, a: int, h: int, w: int) -> Tensor:
    """A level's rows of a flat gradient, Tensor[B, n = A * H * W, k], viewed as Tensor[B, A, k, H, W] without copying
    when ``g`` is laid out ``(B, P, k)`` (index backward) or ``(B, k, P)`` (elementwise ops on this head's views)."""
    b, _, k = g.shape
    if g.stride(2) == 1 and k > 1:  # (B, P, k) rows
        return g.reshape(b, a, h, w, k).permute(0, 1, 4, 2, 3)
    return g.transpose(1, 2).reshape(b, k, a, h, w).transpose(1, 2)  # (B, k, P) rows: a view when n is contiguous


class LevelRows:
    """The rows of one lazy :class:`SplitChannels` slice, read from the levels at a few (image, prior) pairs.

    Args:
        levels: the per-level ``Tensor[B, A, H, W, K]`` that were split (their values are read, detached).
        sl (slice): the channels of this slice.
        placeholder (Tensor[B, P, k]): SplitChannels' output for the slice; gradients reach the levels through it.
    """

    def __init__(self, levels: tuple[Tensor, ...], sl: slice, placeholder: Tensor) -> None:
        self.levels = tuple(t.detach() for t in levels)
        self.sl, self.placeholder = sl, placeholder

    def gather(self, b: Tensor, p: Tensor) -> Tensor:
        """b, p (Tensor[M]) -> Tensor[M, k]: the values ``t[b, p]`` of the flat ``(B, P, k)`` tensor this slice
        would have been, with a sparse gradient of M rows."""
        return _LevelRowsGather.apply(self.placeholder, b, p, self)

    def read(self, b: Tensor, p: Tensor) -> Tensor:
        """The values alone (no gradient): per level, the pairs whose prior falls in it."""
        k = self.sl.stop - self.sl.start
        out = self.levels[0].new_empty(b.numel(), k)  # (M, k)
        start = 0
        for t in self.levels:
            _, a, h, w, _ = t.shape
            n = a * h * w
            inside = ((p >= start) & (p < start + n)).nonzero().squeeze(1)  # (m,)
            local = p[inside] - start  # flat order within a level: (a * H + gy) * W + gx
            cell = local % (h * w)
            out[inside] = t[b[inside], local // (h * w), cell // w, cell % w, self.sl]
            start += n
        return out


class _LevelRowsGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, placeholder: Tensor, b: Tensor, p: Tensor, rows: LevelRows) -> Tensor:
        ctx.shape = placeholder.shape
        ctx.save_for_backward(b, p)
        return rows.read(b, p)  # (M, k)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        b, p = ctx.saved_tensors
        sparse = torch.sparse_coo_tensor(torch.stack((b, p)), grad, ctx.shape, check_invariants=False)
        return sparse, None, None, None
