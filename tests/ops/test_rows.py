"""gather_rows: the rows of a few priors with a sparse gradient that SplitChannels writes straight into the
convolution's layout; values and gradients equal the dense path's."""
from __future__ import annotations

import torch

from detector.models.heads.yolo import ChannelLayout, flatten_level_outputs
from detector.models.priors import AnchorPriorGenerator
from detector.ops.rows import gather_rows


def _levels(dtype=torch.float64):
    """Two levels, A = 2 anchors, 4x4 and 2x2 cells, K = 5 + 3 classes: P = 2 * 16 + 2 * 4 = 40 priors."""
    g = torch.Generator().manual_seed(0)
    raw = [torch.randn(2, 2, 8, h, w, generator=g, dtype=dtype).requires_grad_() for h, w in ((4, 4), (2, 2))]
    priors = AnchorPriorGenerator([[10, 13, 16, 30], [33, 23, 30, 61]], (8, 16))([(4, 4), (2, 2)], "cpu", dtype)
    return raw, priors


def _grads(raw, priors, gather):
    outputs = flatten_level_outputs([r.permute(0, 1, 3, 4, 2) for r in raw], priors, 3, layout=ChannelLayout(3))
    # pairs on both levels, one prior twice (a prior matched to two boxes), one in the last cell of the last level
    b, p = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([3, 17, 17, 35, 39])
    weight = torch.arange(1.0, 6.0, dtype=raw[0].dtype)[:, None]
    loss = (gather(outputs.cls, b, p) * weight).pow(2).sum() + (gather(outputs.box, b, p) * weight).sum() \
        + outputs.obj.sigmoid().sum()
    loss.backward()
    grads = [r.grad.clone() for r in raw]
    for r in raw:
        r.grad = None
    return loss.detach(), grads


def test_sparse_rows_give_the_dense_gradient_exactly():
    raw, priors = _levels()
    dense_loss, dense = _grads(raw, priors, lambda t, b, p: t[b, p])
    sparse_loss, sparse = _grads(raw, priors, gather_rows)
    assert torch.equal(dense_loss, sparse_loss)
    for d, s in zip(dense, sparse):
        assert s.layout == torch.strided
        torch.testing.assert_close(s, d, rtol=0, atol=1e-15)


def test_a_prior_in_two_pairs_adds_both_rows():
    """Prior 17 of image 1 (level 0: anchor 1, cell 1 = row 0, column 1) is gathered twice with weights 2 and 3:
    d/dbox of sum(weight * box) = 2 + 3 = 5 in each of its 4 box channels."""
    raw, priors = _levels()
    _, grads = _grads(raw, priors, gather_rows)
    torch.testing.assert_close(grads[0][1, 1, :4, 0, 1], torch.full((4,), 5.0, dtype=torch.float64))


def test_a_leaf_keeps_a_dense_gradient():
    t = torch.randn(2, 6, 3, requires_grad=True)
    rows = gather_rows(t, torch.tensor([0, 1]), torch.tensor([5, 0]), sparse_grad=False)
    rows.sum().backward()
    assert t.grad.layout == torch.strided and float(t.grad.sum()) == 6.0


def test_no_pairs():
    raw, priors = _levels()
    outputs = flatten_level_outputs([r.permute(0, 1, 3, 4, 2) for r in raw], priors, 3, layout=ChannelLayout(3))
    empty = torch.zeros(0, dtype=torch.long)
    rows = gather_rows(outputs.cls, empty, empty)
    assert rows.shape == (0, 3)
    (rows.sum() + outputs.obj.sum()).backward()
    assert all(torch.all(r.grad[:, :, 5:] == 0) for r in raw)  # class channels: no gradient, but a dense zero one


def _lazy_grads(raw, priors, lazy: bool):
    """_grads through HeadOutputs.class_rows, with the class slice copied (lazy False) or read from the levels."""
    outputs = flatten_level_outputs([r.permute(0, 1, 3, 4, 2) for r in raw], priors, 3, layout=ChannelLayout(3),
                                    lazy_cls=lazy)
    assert (outputs.lazy_cls is not None) == lazy
    b, p = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([3, 17, 17, 35, 39])
    weight = torch.arange(1.0, 6.0, dtype=raw[0].dtype)[:, None]
    rows = outputs.class_rows(b, p)
    loss = (rows * weight).pow(2).sum() + (gather_rows(outputs.box, b, p) * weight).sum() + outputs.obj.sigmoid().sum()
    loss.backward()
    grads = [r.grad.clone() for r in raw]
    for r in raw:
        r.grad = None
    return rows.detach(), loss.detach(), grads


def test_lazy_class_rows_equal_the_copied_ones():
    """lazy_cls: the class slice is never copied; its rows, read per level from the convolution outputs, and the
    gradient they send back equal those of the copied (B, P, C) tensor; prior 39 is the last cell of the last
    level, prior 17 appears twice."""
    raw, priors = _levels()
    rows, loss, grads = _lazy_grads(raw, priors, lazy=False)
    lazy_rows, lazy_loss, lazy_grads = _lazy_grads(raw, priors, lazy=True)
    assert torch.equal(rows, lazy_rows) and torch.equal(loss, lazy_loss)
    # by hand: prior 39 = level 1 (offset 32), local 7 = anchor 1, cell 3 = row 1, column 1
    torch.testing.assert_close(lazy_rows[4], raw[1][1, 1, 5:, 1, 1].detach(), rtol=0, atol=0)
    for d, s in zip(grads, lazy_grads):
        torch.testing.assert_close(s, d, rtol=0, atol=1e-15)


def test_lazy_placeholder_reads_nan_and_no_pairs_keep_the_graph():
    """A dense read of the lazy placeholder gives NaN, never silent zeros; with no pairs the zero class term is
    still on the graph (a rank without positives under DDP) and the class channels get a zero gradient."""
    raw, priors = _levels()
    outputs = flatten_level_outputs([r.permute(0, 1, 3, 4, 2) for r in raw], priors, 3, layout=ChannelLayout(3),
                                    lazy_cls=True)
    assert outputs.cls.shape == (2, 40, 3) and torch.isnan(outputs.cls).all()
    empty = torch.zeros(0, dtype=torch.long)
    zero = outputs.class_rows(empty, empty).sum()
    assert zero.requires_grad and float(zero.detach()) == 0.0
    (zero + outputs.obj.sum()).backward()
    assert all(torch.all(r.grad[:, :, 5:] == 0) for r in raw)
