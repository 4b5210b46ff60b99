"""The head's channel layouts and flatten_level_outputs: values and gradients equal a plain cat-and-slice."""
from __future__ import annotations

import pytest
import torch

from detector.models.heads.yolo import ChannelLayout, flatten_level_outputs
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator


def test_layout_slices_by_hand():
    """C = 3 with objectness and log-variances: box 0-3, obj 4, cls 5-7, lv 8-11, K = 12. SSD (background, no obj):
    box 0-3, cls + background 4-7, K = 8. DFL with 16 bins and centerness: box 0-63, cls 64-66, quality 67."""
    yolo = ChannelLayout(3, box_uncertainty=True)
    assert (yolo.obj_index, yolo.cls_slice, yolo.log_var_slice, yolo.size) == (4, slice(5, 8), slice(8, 12), 12)
    ssd = ChannelLayout(3, objectness=False, background=True)
    assert (ssd.cls_slice, ssd.size) == (slice(4, 8), 8)
    dfl = ChannelLayout(3, box_outputs=64, objectness=False, quality=True)
    assert (dfl.cls_slice, dfl.size) == (slice(64, 67), 68)


def reference(levels, layout):
    """The obvious implementation: concatenate, then slice."""
    flat = torch.cat([t.reshape(t.shape[0], -1, layout.size) for t in levels], 1)  # (B, P, K)
    parts = {"box": flat[..., :layout.box_outputs], "cls": flat[..., layout.cls_slice]}
    if layout.objectness:
        parts["obj"] = flat[..., layout.obj_index]
    if layout.box_uncertainty:
        parts["box_log_var"] = flat[..., layout.log_var_slice]
    if layout.quality:
        parts["quality"] = flat[..., -1]
    return parts


@pytest.mark.parametrize("layout,points", [
    (ChannelLayout(3), False), (ChannelLayout(3, box_uncertainty=True), False),
    (ChannelLayout(3, objectness=False, background=True), False),
    (ChannelLayout(2, box_outputs=8, objectness=False, quality=True), True),
])
def test_flatten_matches_cat_and_slice_in_value_and_gradient(layout, points):
    gen = PointPriorGenerator([8, 16]) if points else AnchorPriorGenerator([[4, 4, 8, 8], [16, 16, 32, 32]], [8, 16])
    priors = gen([(4, 3), (2, 2)], "cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    # leaves in the convolution's (B, A, K, H, W) layout, seen as (B, A, H, W, K) like the head's output
    raw = [torch.randn(2, a, layout.size, h, w, generator=g, dtype=torch.float64, requires_grad=True)
           for a, h, w in priors.level_shapes]
    out = flatten_level_outputs([r.permute(0, 1, 3, 4, 2) for r in raw], priors, layout.num_classes, layout=layout)
    ref = reference([r.permute(0, 1, 3, 4, 2) for r in raw], layout)
    weights = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in ref.items()}
    for name, value in ref.items():
        torch.testing.assert_close(getattr(out, name), value)
    used = [k for k in ref if k != "box_log_var"]  # one output unused: its gradient must be zero
    ours = torch.autograd.grad(sum((getattr(out, k) * weights[k]).sum() for k in used), raw)
    theirs = torch.autograd.grad(sum((ref[k] * weights[k]).sum() for k in used), raw)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert out.background == layout.background


def test_flatten_gradcheck():
    layout = ChannelLayout(2)
    priors = AnchorPriorGenerator([[4, 4]], [8])([(2, 2)], "cpu", torch.float64)
    raw = torch.randn(1, 1, layout.size, 2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x):
        out = flatten_level_outputs([x.permute(0, 1, 3, 4, 2)], priors, 2, layout=layout)
        return out.box.sin().sum() + out.obj.exp().sum() + (out.cls ** 2).sum()

    assert torch.autograd.gradcheck(fn, (raw,))
