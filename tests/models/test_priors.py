"""Tests for detector/models/priors.py and the flat prior order of the YOLOv5 head.

The flat index of anchor ``a`` at cell ``(gy, gx)`` of level ``l`` is
``level_offsets[l] + (a * H + gy) * W + gx`` (detector/structures.py).
"""
import pytest
import torch

from detector.models import AnchorPriorGenerator, PointPriorGenerator, build_yolov5
from detector.models.heads.yolo import YOLOv5Head
from detector.ops.coders import YOLOv5BoxCoder

ANCHORS = [[10, 13, 16, 30, 33, 23], [[30, 61], [62, 45], [59, 119]], [116, 90, 156, 198, 373, 326]]


def test_anchor_priors_small_level_by_hand():
    """One level, stride 8, anchors (10,13), (16,30), H=2, W=3 -> P = 2 * 2 * 3 = 12.
    Order (A, H, W): index i -> a = i // 6, gy = (i % 6) // 3, gx = i % 3, so
    grid x = 0,1,2,0,1,2 twice, grid y = 0,0,0,1,1,1 twice, anchor_id = six 0s then six 1s."""
    gen = AnchorPriorGenerator([[10, 13, 16, 30]], [8])
    p = gen([(2, 3)], "cpu", torch.float32)
    assert len(p) == 12 and p.level_shapes == [(2, 2, 3)] and p.level_offsets == [0, 12]
    assert p.grid[:, 0].tolist() == [0, 1, 2, 0, 1, 2] * 2
    assert p.grid[:, 1].tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert p.anchor_id.tolist() == [0] * 6 + [1] * 6
    assert p.anchors.tolist() == [[10, 13]] * 6 + [[16, 30]] * 6
    assert p.strides.tolist() == [8.0] * 12 and p.level.tolist() == [0] * 12
    # cell (gx, gy) = (2, 1) of anchor 1 is index (1 * 2 + 1) * 3 + 2 = 11, centre ((2 + .5) * 8, (1 + .5) * 8)
    assert p.centers[11].tolist() == [20.0, 12.0]
    assert p.grid.dtype == torch.float32 and p.level.dtype == torch.long and p.anchor_id.dtype == torch.long


def test_anchor_priors_match_flat_index_formula_all_levels():
    """Every (l, a, gy, gx) of a 64x96 input (levels 8x12, 4x6, 2x3) sits at the documented flat index."""
    gen = AnchorPriorGenerator(ANCHORS, [8, 16, 32])
    shapes = [(8, 12), (4, 6), (2, 3)]
    p = gen(shapes, "cpu", torch.float64)
    assert len(p) == 3 * (96 + 24 + 6) and p.grid.dtype == torch.float64
    offsets = p.level_offsets
    assert offsets == [0, 288, 360, 378]
    for l, ((h, w), stride) in enumerate(zip(shapes, (8, 16, 32))):
        a, gy, gx = torch.meshgrid(torch.arange(3), torch.arange(h), torch.arange(w), indexing="ij")
        idx = offsets[l] + (a * h + gy) * w + gx  # (3, H, W), computed independently of the generator
        assert torch.equal(p.grid[idx][..., 0], gx.double()) and torch.equal(p.grid[idx][..., 1], gy.double())
        assert torch.equal(p.anchor_id[idx], a) and bool((p.level[idx] == l).all())
        assert bool((p.strides[idx] == stride).all())
        assert torch.equal(p.anchors[idx], p.level_anchors[l][a])
    assert p.level_anchors[1].tolist() == [[30, 61], [62, 45], [59, 119]]


def test_point_priors():
    """Strides (8, 16), shapes (2, 2), (1, 1): P = 4 + 1; centres (4,4), (12,4), (4,12), (12,12), (8,8)."""
    p = PointPriorGenerator([8, 16])([(2, 2), (1, 1)], "cpu", torch.float32)
    assert p.anchors is None and p.level_anchors is None
    assert p.level_shapes == [(1, 2, 2), (1, 1, 1)]
    assert p.centers.tolist() == [[4, 4], [12, 4], [4, 12], [12, 12], [8, 8]]
    assert p.anchor_id.tolist() == [0] * 5 and p.level.tolist() == [0, 0, 0, 0, 1]


def test_priors_cached_per_shape_device_dtype():
    gen = AnchorPriorGenerator(ANCHORS, [8, 16, 32])
    a = gen([(2, 2), (1, 1), (1, 1)], "cpu", torch.float32)
    b = gen([(2, 2), (1, 1), (1, 1)], torch.device("cpu"), torch.float32)
    c = gen([(2, 2), (1, 1), (1, 1)], "cpu", torch.float64)
    d = gen([(4, 2), (2, 1), (1, 1)], "cpu", torch.float32)
    assert a.grid is b.grid and a.grid is not c.grid and len(d) == 3 * (8 + 2 + 1)
    a.level_shapes.append((9, 9, 9))  # the returned lists are fresh copies, the cache is not touched
    assert gen([(2, 2), (1, 1), (1, 1)]).level_shapes == [(3, 2, 2), (3, 1, 1), (3, 1, 1)]


def test_prior_cache_drops_least_recently_used():
    """The cache keeps 8 entries: after 9 distinct shapes the first is rebuilt (a new tensor), while a
    shape asked for again in between stays cached."""
    gen = PointPriorGenerator([8])
    first = gen([(1, 1)]).grid
    second = gen([(1, 2)]).grid
    for w in range(3, 10):  # 7 more shapes: 9 distinct in all
        gen([(1, w)])
        gen([(1, 2)])  # keeps (1, 2) recently used
    assert gen([(1, 2)]).grid is second
    assert gen([(1, 1)]).grid is not first
    assert torch.equal(gen([(1, 1)]).grid, first)


def test_fractional_stride_rejected():
    with pytest.raises(ValueError, match="positive integers"):
        PointPriorGenerator([8, 16.5])


@pytest.mark.parametrize(
    "anchors, strides, shapes",
    [
        (ANCHORS[:2], [8, 16, 32], [(1, 1)] * 3),  # 2 anchor levels for 3 strides
        ([[10, 13, 16]], [8], [(1, 1)]),  # odd number of values
        ([[10, -13]], [8], [(1, 1)]),  # negative size
        (ANCHORS, [8, 16, 0], [(1, 1)] * 3),  # zero stride
        (ANCHORS, [8, 16, 32], [(1, 1)] * 2),  # 2 shapes for 3 levels
        (ANCHORS, [8, 16, 32], [(1, 1), (0, 1), (1, 1)]),  # empty level
    ],
)
def test_anchor_generator_rejects_bad_input(anchors, strides, shapes):
    with pytest.raises(ValueError, match="AnchorPriorGenerator"):
        AnchorPriorGenerator(anchors, strides)(shapes)


def test_hand_set_raw_output_decodes_at_known_prior():
    """A head whose level-1 convolution is the identity passes a hand-set map straight through.

    64x64 input: levels 8x8, 4x4, 2x2, A = 3, C = 2 so K = 7; level offsets 0, 192, 240.
    Set anchor a = 2 (59 x 119 px) of cell (gx, gy) = (3, 1) on level 1 (stride 16): raw channels
    a * K + k = 14..20 at (gy, gx) = (1, 3) to tx = ty = tw = th = 0. Flat index = 192 + (2*4 + 1)*4 + 3 = 231.
    YOLOv5 decoding: sigmoid(0) = 0.5 -> cx = (2*0.5 - 0.5 + 3) * 16 = 56, cy = (0.5 + 1) * 16 = 24,
    w = (2*0.5)^2 * 59 = 59, h = 119 -> xyxy (56 - 29.5, 24 - 59.5, 56 + 29.5, 24 + 59.5)
    = (26.5, -35.5, 85.5, 83.5). Also obj = 3.0 and cls = (-1, 2).
    """
    C, K, A = 2, 7, 3
    head = YOLOv5Head([8, A * K, 8], C, A, [8, 16, 32])
    with torch.no_grad():
        head.convs[1].weight.copy_(torch.eye(A * K)[:, :, None, None])  # 1x1 identity
        head.convs[1].bias.zero_()
    feats = [torch.rand(1, 8, 8, 8), torch.full((1, A * K, 4, 4), -5.0), torch.rand(1, 8, 2, 2)]
    feats[1][0, 14:21, 1, 3] = torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, -1.0, 2.0])
    levels = head(feats)
    priors = AnchorPriorGenerator(ANCHORS, [8, 16, 32])([(8, 8), (4, 4), (2, 2)])
    out = head.flatten(levels, priors)
    assert out.box.shape == (1, 252, 4) and out.obj.shape == (1, 252) and out.cls.shape == (1, 252, 2)
    boxes = YOLOv5BoxCoder().decode(out.box, priors)
    torch.testing.assert_close(boxes[0, 231], torch.tensor([26.5, -35.5, 85.5, 83.5]))
    assert out.obj[0, 231].item() == 3.0 and out.cls[0, 231].tolist() == [-1.0, 2.0]
    level1 = out.obj[0, 192:240]
    assert int((level1 == 3.0).sum()) == 1  # every other level-1 prior kept the fill value
    assert bool((level1[torch.arange(48) != 39] == -5.0).all())


def test_flat_order_matches_real_head_output_reshape():
    """yolov5n on a 64x96 input: for every prior, HeadOutputs at the formula's index equals the raw
    (B, A*K, H, W) convolution output at channel a*K + k, cell (gy, gx)."""
    torch.manual_seed(0)
    model = build_yolov5("n", num_classes=3, box_uncertainty=True).eval()
    raw = []
    hooks = [conv.register_forward_hook(lambda m, i, o: raw.append(o)) for conv in model.head.convs]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    for h in hooks:
        h.remove()
    K = 5 + 3 + 4
    offsets = out.priors.level_offsets
    for l, r in enumerate(raw):
        _, _, h, w = r.shape
        a, gy, gx = torch.meshgrid(torch.arange(3), torch.arange(h), torch.arange(w), indexing="ij")
        idx = (offsets[l] + (a * h + gy) * w + gx).reshape(-1)  # (3*H*W,)
        per_cell = r.reshape(2, 3, K, h, w)[:, a, :, gy, gx]  # (3, H, W, B, K) by advanced indexing
        per_cell = per_cell.permute(3, 0, 1, 2, 4).reshape(2, -1, K)  # (B, 3*H*W, K)
        assert torch.equal(out.box[:, idx], per_cell[..., :4])
        assert torch.equal(out.obj[:, idx], per_cell[..., 4])
        assert torch.equal(out.cls[:, idx], per_cell[..., 5:8])
        assert torch.equal(out.box_log_var[:, idx], per_cell[..., 8:])
        assert torch.equal(out.priors.grid[idx, 0], gx.reshape(-1).float())


def test_flatten_rejects_levels_not_matching_priors():
    head = YOLOv5Head([4], 2, 3, [8])
    levels = head([torch.rand(1, 4, 2, 2)])
    priors = AnchorPriorGenerator([ANCHORS[0]], [8])([(2, 3)])
    with pytest.raises(ValueError, match="do not match the priors"):
        head.flatten(levels, priors)

