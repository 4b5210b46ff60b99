"""Tests of detector/ops/coders.py: the YOLOv5, YOLOv3, delta, ltrb and distribution (DFL) box coders.

Conventions: a 640 input with YOLOv5's anchors at strides (8, 16, 32), so the levels are 80 x 80, 40 x 40 and
20 x 20 cells; anchor ``a`` of cell ``(gx, gy)`` at level ``l`` has the flat index
``level_offsets[l] + (a * H + gy) * W + gx``. Real boxes are coco128's first 64 images letterboxed to 640.

Hand-worked cases (one level of stride 8, 10 x 10 cells, anchors (10, 13), (16, 30), (33, 23)):

* anchor 0 at cell ``(gx, gy) = (3, 5)`` is prior ``(0 * 10 + 5) * 10 + 3 = 53``, centre ``(28, 44)``;
* YOLOv3, raw ``(0, 0, 0, 0)``: centre ``((sigmoid(0) + 3) * 8, (sigmoid(0) + 5) * 8) = (28, 44)``, size
  ``(exp(0) * 10, exp(0) * 13) = (10, 13)``: xyxy ``(23, 37.5, 33, 50.5)``. The box of centre ``(30, 42)``, size
  ``(20, 13)``: offsets ``30 / 8 - 3 = 0.75``, ``42 / 8 - 5 = 0.25``, so raw ``(ln 3, -ln 3, ln 2, 0)``
  (``logit(0.75) = ln 3``);
* YOLOv5, raw ``(0, 0, 0, 0)``: ``2 * 0.5 - 0.5 + 3 = 3.5`` cells, size ``(2 * 0.5)^2 * anchor``: the same box.
  Raw ``(ln 3, -ln 3, 0, ln 3)``: sigmoids ``(0.75, 0.25, 0.5, 0.75)``, centre ``((1.5 - 0.5 + 3) * 8,
  (0.5 - 0.5 + 5) * 8) = (32, 40)``, size ``(1 * 10, 1.5^2 * 13) = (10, 29.25)``;
* delta, weights (10, 10, 5, 5), anchor 1 ``(16, 30)`` at cell (3, 5) (prior 153, centre (28, 44)) and the box of
  centre ``(30, 40)``, size ``(32, 15)``: ``dx = 10 * 2 / 16 = 1.25``, ``dy = 10 * -4 / 30 = -4 / 3``,
  ``dw = 5 ln 2``, ``dh = 5 ln 0.5``;
* ltrb, point prior at cell (3, 5) of stride 8 (index 53 of a 10 x 10 level), raw ``(1, 2, 0.5, 1)`` strides:
  xyxy ``(28 - 8, 44 - 16, 28 + 4, 44 + 8) = (20, 28, 32, 52)``; with ``activation="exp"`` that box is raw
  ``(0, ln 2, -ln 2, 0)``;
* distribution with 4 bins: uniform logits give ``(0 + 1 + 2 + 3) / 4 = 1.5`` strides per side, xyxy
  ``(16, 32, 40, 56)``; logits ``50 * one_hot(k)`` give ``k``.
"""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection._utils import BoxLinearCoder as TorchvisionBoxLinearCoder

from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.ops.boxes import xyxy_to_cxcywh
from detector.ops.coders import YOLOv3BoxCoder, YOLOv5BoxCoder
from detector.ops.delta_coder import DeltaBoxCoder
from detector.ops.point_coders import DistributionCoder, LTRBCoder, dfl_expectation
from detector.structures import Priors

P3, P4, P5 = [10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]
STRIDES = (8, 16, 32)
SHAPES = [(80, 80), (40, 40), (20, 20)]
ANCHOR_PRIORS = AnchorPriorGenerator([P3, P4, P5], STRIDES)(SHAPES)
POINT_PRIORS = PointPriorGenerator(STRIDES)(SHAPES)
SMALL_ANCHORS = AnchorPriorGenerator([P3], [8])([(10, 10)])  # the hand-worked level
SMALL_POINTS = PointPriorGenerator([8])([(10, 10)])

ANCHOR_CODERS = [YOLOv5BoxCoder(), YOLOv3BoxCoder(), DeltaBoxCoder(), DeltaBoxCoder((10.0, 10.0, 5.0, 5.0))]
POINT_CODERS = [LTRBCoder(), LTRBCoder(False), LTRBCoder(activation="exp"), LTRBCoder(activation="relu"),
                DistributionCoder(), DistributionCoder(32, normalize_by_stride=False)]
ALL_CODERS = ANCHOR_CODERS + POINT_CODERS


def priors_for(coder) -> Priors:
    return ANCHOR_PRIORS if coder.needs_anchors else POINT_PRIORS


def target_size(coder) -> int:
    """Values per encoded target: num_outputs, except DFL's 4 distances."""
    return 4 if isinstance(coder, DistributionCoder) else coder.num_outputs


@pytest.fixture(scope="module")
def coco_boxes(coco128_targets) -> torch.Tensor:
    """Tensor[n, 4] xyxy pixels: coco128's first 64 images letterboxed to 640."""
    boxes = coco128_targets(64, 640)[:, 2:]
    assert boxes.shape[0] > 200
    return boxes


def flat_index(priors: Priors, level: torch.Tensor, anchor: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Flat prior index of ``anchor`` at ``cell = (gx, gy)`` (Tensor[n, 2] long) of ``level`` (Tensor[n])."""
    offsets = torch.tensor(priors.level_offsets[:-1])
    h = torch.tensor([s[1] for s in priors.level_shapes])
    w = torch.tensor([s[2] for s in priors.level_shapes])
    return offsets[level] + (anchor * h[level] + cell[:, 1]) * w[level] + cell[:, 0]


def centre_cells(boxes: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Cell (gx, gy) holding each box centre at its level -> Tensor[n, 2] long."""
    stride = torch.tensor(STRIDES, dtype=boxes.dtype)[level]
    size = torch.tensor([s[0] for s in SHAPES])[level]
    cell = (xyxy_to_cxcywh(boxes)[:, :2] / stride[:, None]).floor().long()
    return torch.minimum(cell.clamp(min=0), size[:, None] - 1)


def anchor_pairs(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box with the best-shaped of the 9 anchors (smallest max(w / aw, aw / w, h / ah, ah / h)) in the cell
    holding its centre, kept when it fits YOLOv5's range (``w / aw < 4`` and ``h / ah < 4``, for its sigmoid
    size). Returns (boxes Tensor[m, 4], prior_index Tensor[m])."""
    anchors = torch.tensor(P3 + P4 + P5, dtype=torch.float32).reshape(9, 2)
    ratio = xyxy_to_cxcywh(boxes)[:, None, 2:] / anchors  # (n, 9, 2)
    worst = torch.maximum(ratio, 1 / ratio).amax(-1)  # (n, 9)
    best = worst.argmin(1)  # (n,)
    level, anchor = best // 3, best % 3
    keep = ratio[torch.arange(len(boxes)), best].amax(-1) < 3.9
    index = flat_index(ANCHOR_PRIORS, level, anchor, centre_cells(boxes, level))
    return boxes[keep], index[keep]


def point_pairs(
    boxes: torch.Tensor, max_distance: float = 14.99, in_pixels: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box with the centre-cell point prior of the finest level where that prior's centre is inside the box
    (by more than 0.01 strides) and every ltrb distance is below ``max_distance`` strides (pixels if
    ``in_pixels``): FCOS-like scale ranges; boxes with no such level are dropped.
    Returns (boxes Tensor[m, 4], prior_index Tensor[m])."""
    n = len(boxes)
    candidates, valid = [], []
    for level in range(len(STRIDES)):
        lv = torch.full((n,), level)
        idx = flat_index(POINT_PRIORS, lv, torch.zeros(n, dtype=torch.long), centre_cells(boxes, lv))
        centre = POINT_PRIORS.centers[idx]
        dist = torch.cat((centre - boxes[:, :2], boxes[:, 2:] - centre), 1) / STRIDES[level]
        candidates.append(idx)
        limit = max_distance / STRIDES[level] if in_pixels else max_distance
        valid.append((dist > 0.01).all(1) & (dist < limit).all(1))
    candidates, valid = torch.stack(candidates, 1), torch.stack(valid, 1)  # (n, 3)
    first = valid.int().argmax(1)  # finest valid level
    keep = valid.any(1)
    return boxes[keep], candidates[torch.arange(n), first][keep]


def two_hot_logits(dist: torch.Tensor, bins: int) -> torch.Tensor:
    """dist (Tensor[m, 4]) in [0, bins - 1) -> logits Tensor[m, 4 * bins] of the two-hot distribution whose
    expectation is ``dist`` (weights on floor(d) and floor(d) + 1)."""
    lo = dist.floor().long()
    p = torch.zeros(*dist.shape, bins, dtype=dist.dtype)
    p.scatter_(-1, lo[..., None], (lo + 1 - dist)[..., None])
    p.scatter_add_(-1, (lo + 1)[..., None], (dist - lo)[..., None])
    return p.clamp(min=1e-12).log().flatten(-2)  # (m, 4 * bins)


# ---------------------------------------------------------------------------------------------------------------
# interface


def test_attributes_and_repr_round_trip():
    """num_outputs = R and needs_anchors per coder; repr shows every parameter and rebuilds an equal coder."""
    expected = {
        YOLOv5BoxCoder(): (4, True),
        YOLOv3BoxCoder(): (4, True),
        DeltaBoxCoder((10, 10, 5, 5)): (4, True),
        LTRBCoder(activation="exp"): (4, False),
        DistributionCoder(16): (64, False),
        DistributionCoder(7): (28, False),
    }
    namespace = {c.__name__: c for c in (YOLOv5BoxCoder, YOLOv3BoxCoder, DeltaBoxCoder, LTRBCoder, DistributionCoder)}
    for coder, (r, needs) in expected.items():
        assert (coder.num_outputs, coder.needs_anchors) == (r, needs), coder
        rebuilt = eval(repr(coder), namespace)
        assert repr(rebuilt) == repr(coder) and vars(rebuilt) == vars(coder)
    assert repr(DeltaBoxCoder((10, 10, 5, 5))) == (
        f"DeltaBoxCoder(weights=(10.0, 10.0, 5.0, 5.0), clip={math.log(1000 / 16)}, eps=1e-06)"
    )
    assert repr(LTRBCoder(False, "relu")) == "LTRBCoder(normalize_by_stride=False, activation='relu', eps=1e-06)"
    assert repr(DistributionCoder()) == "DistributionCoder(bins=16, normalize_by_stride=True)"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DeltaBoxCoder((1.0, 1.0, 1.0)), "weights"),
        (lambda: DeltaBoxCoder((1.0, 0.0, 1.0, 1.0)), "weights"),
        (lambda: DeltaBoxCoder(clip=0.0), "clip"),
        (lambda: LTRBCoder(activation="sigmoid"), "activation"),
        (lambda: DistributionCoder(1), "bins"),
        (lambda: DistributionCoder(2.5), "bins"),
        (lambda: YOLOv3BoxCoder(eps=0.5), "eps"),
        (lambda: YOLOv5BoxCoder(eps=0.0), "eps"),
    ],
)
def test_invalid_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("coder", ANCHOR_CODERS, ids=repr)
def test_anchor_coders_reject_point_priors(coder):
    """Point priors (anchors None) given to an anchor coder: a ValueError naming the coder, in every method."""
    raw, boxes, index = torch.zeros(1, 4), torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([0])
    name = type(coder).__name__
    calls = [
        lambda: coder.decode(torch.zeros(len(SMALL_POINTS), 4), SMALL_POINTS),
        lambda: coder.decode_at(raw, SMALL_POINTS, index),
        lambda: coder.encode_at(boxes, SMALL_POINTS, index),
        lambda: coder.encode(boxes.expand(len(SMALL_POINTS), 4), SMALL_POINTS),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"{name}.*needs anchor priors"):
            call()


def test_shape_errors():
    """Wrong R, wrong P, M mismatch and a non-integer prior_index each raise a ValueError that says what is valid."""
    dfl = DistributionCoder(16)
    with pytest.raises(ValueError, match="R = num_outputs = 64"):
        dfl.decode(torch.zeros(len(SMALL_POINTS), 4), SMALL_POINTS)
    with pytest.raises(ValueError, match="P = len"):
        YOLOv3BoxCoder().decode(torch.zeros(2, 99, 4), SMALL_ANCHORS)
    with pytest.raises(ValueError, match="M = len"):
        LTRBCoder().decode_at(torch.zeros(3, 4), SMALL_POINTS, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="boxes must be xyxy"):
        LTRBCoder().encode_at(torch.zeros(2, 5), SMALL_POINTS, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="prior_index"):
        LTRBCoder().decode_at(torch.zeros(2, 4), SMALL_POINTS, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="4 \\* bins"):
        dfl_expectation(torch.zeros(3, 60), 16)


@pytest.mark.parametrize("coder", ALL_CODERS, ids=repr)
def test_empty_selection(coder):
    """M = 0: decode_at gives Tensor[0, 4], encode_at Tensor[0, R] (4 for DFL), and backward works."""
    priors = priors_for(coder)
    index = torch.zeros(0, dtype=torch.long)
    raw = torch.zeros(0, coder.num_outputs, requires_grad=True)
    boxes = coder.decode_at(raw, priors, index)
    assert boxes.shape == (0, 4)
    boxes.sum().backward()
    assert raw.grad.shape == (0, coder.num_outputs)
    assert coder.encode_at(torch.zeros(0, 4), priors, index).shape == (0, target_size(coder))


# ---------------------------------------------------------------------------------------------------------------
# decode_at == decode[index], encode_at == encode[index]


@pytest.mark.parametrize("coder", ALL_CODERS, ids=repr)
def test_decode_at_equals_decode_then_index(coder):
    """Random raw for B = 2 images; 300 random (image, prior) pairs decode the same either way."""
    g = torch.Generator().manual_seed(0)
    priors = priors_for(coder)
    full = torch.randn(2, len(priors), coder.num_outputs, generator=g)  # (B, P, R)
    b = torch.randint(0, 2, (300,), generator=g)
    p = torch.randint(0, len(priors), (300,), generator=g)
    expected = coder.decode(full, priors)[b, p]  # (M, 4)
    torch.testing.assert_close(coder.decode_at(full[b, p], priors, p), expected)


@pytest.mark.parametrize("coder", ALL_CODERS, ids=repr)
def test_encode_at_equals_encode_then_index(coder, coco_boxes):
    """Real boxes paired with random priors: encode of a (P, 4) layout then indexing equals encode_at."""
    g = torch.Generator().manual_seed(1)
    priors = priors_for(coder)
    p = torch.randperm(len(priors), generator=g)[: len(coco_boxes)]
    layout = torch.zeros(len(priors), 4)
    layout[:, 2:] = 1.0  # a 1-pixel box wherever no real box sits
    layout[p] = coco_boxes
    torch.testing.assert_close(coder.encode_at(coco_boxes, priors, p), coder.encode(layout, priors)[p])


class _NoFullPriors(Priors):
    """Priors whose all-prior ``centers`` may not be built: the ``_at`` methods must only index."""

    @property
    def centers(self):  # noqa: D401
        raise AssertionError("decode_at / encode_at built the centres of all P priors")


@pytest.mark.parametrize("coder", ALL_CODERS, ids=repr)
def test_at_methods_only_gather_selected_priors(coder, coco_boxes):
    """decode_at / encode_at never build an all-prior tensor (here: ``priors.centers``, Tensor[P, 2])."""
    base = priors_for(coder)
    priors = _NoFullPriors(**{f: getattr(base, f) for f in base.__dataclass_fields__})
    index = torch.arange(0, len(coco_boxes) * 7, 7)
    assert coder.decode_at(torch.zeros(len(index), coder.num_outputs), priors, index).shape == (len(index), 4)
    assert coder.encode_at(coco_boxes, priors, index).shape == (len(index), target_size(coder))


# ---------------------------------------------------------------------------------------------------------------
# round trips on real boxes


@pytest.mark.parametrize("coder", ANCHOR_CODERS, ids=repr)
def test_anchor_coder_round_trip_on_coco_boxes(coder, coco_boxes):
    """Each coco box at the centre cell of its best-shaped anchor: decode_at(encode_at(box)) == box."""
    boxes, index = anchor_pairs(coco_boxes)
    assert len(boxes) > 0.9 * len(coco_boxes)  # only boxes over 3.9x their best anchor are dropped
    raw = coder.encode_at(boxes, ANCHOR_PRIORS, index)
    assert raw.shape == (len(boxes), 4) and bool(raw.isfinite().all())
    torch.testing.assert_close(coder.decode_at(raw, ANCHOR_PRIORS, index), boxes, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("coder", [c for c in POINT_CODERS if not isinstance(c, DistributionCoder)], ids=repr)
def test_ltrb_round_trip_on_coco_boxes(coder, coco_boxes):
    """Each coco box at a point prior inside it: decode_at(encode_at(box)) == box for every activation."""
    boxes, index = point_pairs(coco_boxes, max_distance=math.inf)
    assert len(boxes) > 0.9 * len(coco_boxes)  # dropped: boxes thinner than a cell that miss every cell centre
    raw = coder.encode_at(boxes, POINT_PRIORS, index)
    torch.testing.assert_close(coder.decode_at(raw, POINT_PRIORS, index), boxes, rtol=1e-5, atol=1e-3)


def test_ltrb_none_round_trips_priors_outside_the_box(coco_boxes):
    """activation 'none': negative distances (prior outside the box) are valid raw values and round-trip."""
    coder = LTRBCoder()
    index = torch.zeros(len(coco_boxes), dtype=torch.long)  # the top-left prior, outside most boxes
    raw = coder.encode_at(coco_boxes, POINT_PRIORS, index)
    assert bool((raw < 0).any())
    torch.testing.assert_close(coder.decode_at(raw, POINT_PRIORS, index), coco_boxes, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("coder", [DistributionCoder(16), DistributionCoder(32, normalize_by_stride=False)], ids=repr)
def test_distribution_round_trip_on_coco_boxes(coder, coco_boxes):
    """encode_at gives distances Tensor[m, 4]; their two-hot logits decode back to the box (within range)."""
    boxes, index = point_pairs(coco_boxes, coder.max_distance, in_pixels=not coder.normalize_by_stride)
    assert len(boxes) > 0.3 * len(coco_boxes)
    dist = coder.encode_at(boxes, POINT_PRIORS, index)
    assert dist.shape == (len(boxes), 4)
    decoded = coder.decode_at(two_hot_logits(dist, coder.bins), POINT_PRIORS, index)
    torch.testing.assert_close(decoded, boxes, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# hand-worked numbers


def test_yolov3_worked_example():
    """Anchor (10, 13) at cell (3, 5), stride 8 (prior 53): raw 0 -> centre (28, 44), size (10, 13); the box of
    centre (30, 42), size (20, 13) encodes to (ln 3, -ln 3, ln 2, 0)."""
    coder, idx = YOLOv3BoxCoder(), torch.tensor([53])
    expected = torch.tensor([[23.0, 37.5, 33.0, 50.5]])
    torch.testing.assert_close(coder.decode_at(torch.zeros(1, 4), SMALL_ANCHORS, idx), expected)
    torch.testing.assert_close(coder.decode(torch.zeros(100 * 3, 4), SMALL_ANCHORS)[53:54], expected)
    box = torch.tensor([[20.0, 35.5, 40.0, 48.5]])
    ln3, ln2 = math.log(3), math.log(2)
    torch.testing.assert_close(coder.encode_at(box, SMALL_ANCHORS, idx), torch.tensor([[ln3, -ln3, ln2, 0.0]]))


def test_yolov3_encode_clamps_centre_to_its_cell():
    """A centre outside prior 53's cell (x = 50 px is in cell 6) is encoded at the cell border: logit(1 - eps)."""
    coder = YOLOv3BoxCoder(eps=1e-3)
    raw = coder.encode_at(torch.tensor([[45.0, 39.0, 55.0, 49.0]]), SMALL_ANCHORS, torch.tensor([53]))
    assert raw[0, 0].item() == pytest.approx(math.log((1 - 1e-3) / 1e-3), rel=1e-4)


def test_yolov5_worked_example_and_full_encode():
    """Raw 0 -> the anchor box at the cell centre; raw (ln 3, -ln 3, 0, ln 3) -> centre (32, 40), size
    (10, 29.25). encode (full form, unchanged) and encode_at invert decode; a box over 4x the anchor clamps."""
    coder, idx = YOLOv5BoxCoder(), torch.tensor([53])
    torch.testing.assert_close(coder.decode_at(torch.zeros(1, 4), SMALL_ANCHORS, idx),
                               torch.tensor([[23.0, 37.5, 33.0, 50.5]]))
    ln3 = math.log(3)
    raw = torch.tensor([[ln3, -ln3, 0.0, ln3]])
    box = torch.tensor([[27.0, 40 - 29.25 / 2, 37.0, 40 + 29.25 / 2]])
    torch.testing.assert_close(coder.decode_at(raw, SMALL_ANCHORS, idx), box)
    torch.testing.assert_close(coder.encode_at(box, SMALL_ANCHORS, idx), raw, rtol=1e-5, atol=1e-5)
    layout = box.expand(len(SMALL_ANCHORS), 4)
    torch.testing.assert_close(coder.encode(layout, SMALL_ANCHORS)[53:54], raw, rtol=1e-5, atol=1e-5)
    big = torch.tensor([[-22.0, 0.0, 78.0, 88.0]])  # centre (28, 44), 10x the anchor's width
    assert coder.encode_at(big, SMALL_ANCHORS, idx)[0, 2].item() == pytest.approx(math.log((1 - 1e-6) / 1e-6), rel=1e-3)
    assert coder.encode(big.expand(300, 4), SMALL_ANCHORS, eps=1e-3)[53, 2].item() == pytest.approx(
        math.log(999), rel=1e-4)


def test_delta_worked_example():
    """Weights (10, 10, 5, 5), anchor (16, 30) at centre (28, 44) (prior 153), box centre (30, 40), size (32, 15):
    deltas (1.25, -4/3, 5 ln 2, -5 ln 2), and back."""
    coder, idx = DeltaBoxCoder((10, 10, 5, 5)), torch.tensor([153])
    box = torch.tensor([[14.0, 32.5, 46.0, 47.5]])
    deltas = torch.tensor([[1.25, -4 / 3, 5 * math.log(2), -5 * math.log(2)]])
    torch.testing.assert_close(coder.encode_at(box, SMALL_ANCHORS, idx), deltas)
    torch.testing.assert_close(coder.decode_at(deltas, SMALL_ANCHORS, idx), box)


def test_ltrb_worked_examples():
    """Point prior 53 (centre (28, 44), stride 8): raw (1, 2, 0.5, 1) -> (20, 28, 32, 52); 'exp' raw
    (0, ln 2, -ln 2, 0) is the same box; 'relu' zeroes negative raw; pixels when not normalised."""
    idx, box = torch.tensor([53]), torch.tensor([[20.0, 28.0, 32.0, 52.0]])
    raw = torch.tensor([[1.0, 2.0, 0.5, 1.0]])
    torch.testing.assert_close(LTRBCoder().decode_at(raw, SMALL_POINTS, idx), box)
    ln2 = math.log(2)
    exp_raw = torch.tensor([[0.0, ln2, -ln2, 0.0]])
    torch.testing.assert_close(LTRBCoder(activation="exp").decode_at(exp_raw, SMALL_POINTS, idx), box)
    torch.testing.assert_close(LTRBCoder(activation="exp").encode_at(box, SMALL_POINTS, idx), exp_raw)
    relu = LTRBCoder(activation="relu")
    torch.testing.assert_close(relu.decode_at(torch.tensor([[-3.0, 2.0, 0.5, 1.0]]), SMALL_POINTS, idx),
                               torch.tensor([[28.0, 28.0, 32.0, 52.0]]))
    torch.testing.assert_close(relu.encode_at(box, SMALL_POINTS, idx), raw)  # identity on positive distances
    torch.testing.assert_close(LTRBCoder(False).decode_at(raw * 8, SMALL_POINTS, idx), box)


def test_ltrb_exp_encode_of_a_prior_outside_is_finite():
    """'exp' has no preimage of a negative distance: encode clamps the distance to eps (log(eps), finite)."""
    raw = LTRBCoder(activation="exp", eps=1e-4).encode_at(torch.tensor([[40.0, 0.0, 60.0, 10.0]]), SMALL_POINTS,
                                                         torch.tensor([53]))
    assert bool(raw.isfinite().all()) and raw[0, 0].item() == pytest.approx(math.log(1e-4), rel=1e-5)


@pytest.mark.parametrize("coder", ALL_CODERS, ids=repr)
def test_degenerate_boxes_encode_finite(coder):
    """A zero-width and a zero-height box at prior 53 (centre (28, 44)): every coder's target stays finite (the
    log-size coders clamp the size ratio at eps instead of returning -inf)."""
    priors = SMALL_ANCHORS if coder.needs_anchors else SMALL_POINTS
    boxes = torch.tensor([[28.0, 40.0, 28.0, 48.0], [24.0, 44.0, 32.0, 44.0]])
    target = coder.encode_at(boxes, priors, torch.tensor([53, 53]))
    assert bool(target.isfinite().all()), target


def test_distribution_uniform_and_one_hot():
    """4 bins: uniform logits -> 1.5 strides per side, xyxy (16, 32, 40, 56) at prior 53; logits 50 * one_hot(k)
    -> k; 16 bins: uniform -> 7.5 strides everywhere (the whole-tensor decode)."""
    coder, idx = DistributionCoder(4), torch.tensor([53])
    torch.testing.assert_close(coder.decode_at(torch.zeros(1, 16), SMALL_POINTS, idx),
                               torch.tensor([[16.0, 32.0, 40.0, 56.0]]))
    k = torch.tensor([[0, 3, 2, 1]])
    logits = 50.0 * torch.nn.functional.one_hot(k, 4).float().flatten(-2)  # (1, 16)
    torch.testing.assert_close(dfl_expectation(logits, 4), k.float())
    torch.testing.assert_close(coder.decode_at(logits, SMALL_POINTS, idx), torch.tensor([[28.0, 20.0, 44.0, 52.0]]))
    dfl16 = DistributionCoder(16)
    boxes = dfl16.decode(torch.zeros(2, len(POINT_PRIORS), 64), POINT_PRIORS)  # (2, P, 4)
    half = 7.5 * POINT_PRIORS.strides[:, None]
    expected = torch.cat((POINT_PRIORS.centers - half, POINT_PRIORS.centers + half), 1)
    torch.testing.assert_close(boxes, expected.expand(2, -1, -1))


def test_dfl_expectation_is_softmax_times_bin():
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(3, 5, 4 * 7, generator=g)
    manual = (raw.reshape(3, 5, 4, 7).softmax(-1) * torch.arange(7.0)).sum(-1)
    torch.testing.assert_close(dfl_expectation(raw, 7), manual)


def test_distribution_encode_clamps_to_bins():
    """Targets lie in [0, bins - 1 - 0.01]: a huge box gives 14.99 on every side (16 bins), a box beside the
    prior gives 0 on the side facing away from it."""
    coder, idx = DistributionCoder(16), torch.tensor([53])
    huge = coder.encode_at(torch.tensor([[-500.0, -500.0, 500.0, 500.0]]), SMALL_POINTS, idx)
    torch.testing.assert_close(huge, torch.full((1, 4), 14.99))
    beside = coder.encode_at(torch.tensor([[40.0, 36.0, 56.0, 52.0]]), SMALL_POINTS, idx)  # right of (28, 44)
    torch.testing.assert_close(beside, torch.tensor([[0.0, 1.0, 3.5, 1.0]]))


# ---------------------------------------------------------------------------------------------------------------
# torchvision agreement


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_delta_matches_torchvision_box_coder(weights, coco_boxes):
    """DeltaBoxCoder == torchvision BoxCoder(weights) encode_single / decode_single on coco boxes with anchor
    boxes ``centers -+ anchors / 2`` (decode includes deltas beyond the clip)."""
    boxes, index = anchor_pairs(coco_boxes)
    coder, reference = DeltaBoxCoder(weights), TorchvisionBoxCoder(weights)
    half = ANCHOR_PRIORS.anchors[index] / 2
    anchor_boxes = torch.cat((ANCHOR_PRIORS.centers[index] - half, ANCHOR_PRIORS.centers[index] + half), 1)
    torch.testing.assert_close(coder.encode_at(boxes, ANCHOR_PRIORS, index),
                               reference.encode_single(boxes, anchor_boxes), rtol=1e-5, atol=1e-5)
    g = torch.Generator().manual_seed(3)
    codes = torch.randn(len(index), 4, generator=g) * torch.tensor(weights)
    codes[:5, 2:] = 6.0 * torch.tensor(weights[2:])  # dw = dh = 6 > clip = ln(62.5) = 4.14
    torch.testing.assert_close(coder.decode_at(codes, ANCHOR_PRIORS, index),
                               reference.decode_single(codes, anchor_boxes), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("normalize", [True, False])
def test_ltrb_matches_torchvision_box_linear_coder(normalize, coco_boxes):
    """LTRBCoder == torchvision BoxLinearCoder(normalize_by_size) with reference boxes of size stride centred
    on the prior centres."""
    boxes, index = point_pairs(coco_boxes, max_distance=math.inf)
    coder, reference = LTRBCoder(normalize), TorchvisionBoxLinearCoder(normalize_by_size=normalize)
    half = POINT_PRIORS.strides[index, None] / 2
    ref_boxes = torch.cat((POINT_PRIORS.centers[index] - half, POINT_PRIORS.centers[index] + half), 1)
    torch.testing.assert_close(coder.encode_at(boxes, POINT_PRIORS, index), reference.encode(ref_boxes, boxes))
    codes = torch.rand(len(index), 4, generator=torch.Generator().manual_seed(4)) * 10
    torch.testing.assert_close(coder.decode_at(codes, POINT_PRIORS, index), reference.decode(codes, ref_boxes))


# ---------------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("coder", ALL_CODERS, ids=repr)
def test_decode_gradcheck(coder):
    """float64 gradcheck of decode and decode_at on a small level (relu away from its kink)."""
    make = AnchorPriorGenerator([P3], [8]) if coder.needs_anchors else PointPriorGenerator([8])
    priors = make([(1, 2)], dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(1, len(priors), coder.num_outputs, generator=g, dtype=torch.float64)
    if getattr(coder, "activation", None) == "relu":
        raw = raw.abs() + 0.1
    raw.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda r: coder.decode(r, priors), (raw,))
    index = torch.tensor([0, 1, 1, len(priors) - 1])
    sub = raw[0, index].detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda r: coder.decode_at(r, priors, index), (sub,))
