"""Tests of detector/ops/nms.py.

DIoU-NMS hand case (threshold 0.4), boxes of one class:
    A = (0, 0, 10, 10) score 0.9, B = (4, 0, 14, 10) score 0.8.
    Intersection 6 x 10 = 60, union 100 + 100 - 60 = 140, IoU = 3/7 = 0.4286 > 0.4: plain NMS drops B.
    Enclosing box (0, 0, 14, 10): c^2 = 196 + 100 = 296; centres (5, 5), (9, 5): rho^2 = 16;
    DIoU = 3/7 - 16/296 = 3/7 - 2/37 = 97/259 = 0.3745 <= 0.4: DIoU-NMS keeps B.
    C = (1, 1, 9, 9) score 0.7 is concentric with A: IoU = 64/100 = 0.64 and rho = 0, so DIoU = 0.64 as well:
    both methods drop C.

Variance voting hand case (sigma_t = 0.02), one class:
    kept A = (0, 0, 10, 10), ln sigma^2 = 0 on every coordinate (weight 1 at IoU 1);
    B = (0, 0, 10, 12), ln sigma^2 = ln 0.5 (sigma^2 = 0.5), IoU(A, B) = 100/120 = 5/6;
        p_B = exp(-(1 - 5/6)^2 / 0.02) = exp(-1/0.72), weight p_B / 0.5;
    D = (20, 20, 30, 30), same class, disjoint: IoU 0, no vote;
    E = (0, 0, 10, 14), another class: no vote.
    x1, y1, x2 agree between A and B, so they stay; y2 = (10 * 1 + 12 * p_B / 0.5) / (1 + p_B / 0.5) = 10.6655.
"""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvops

from detector.ops.nms import greedy_nms, nms_on_prefixes, postprocess, top_k_per_image, variance_vote


def random_scene(n: int, generator: torch.Generator, size: float = 200.0) -> torch.Tensor:
    """n random xyxy boxes (Tensor[n, 4]) in a size x size image, sides 1..size/3 (many overlaps)."""
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 3 + 1
    return torch.cat((xy, xy + wh), dim=1)


def reference_greedy_diou_nms(boxes, scores, groups, threshold):
    """The textbook loop: take the best remaining box, drop same-group boxes whose torchvision DIoU > threshold."""
    order = scores.argsort(descending=True).tolist()
    diou = tvops.distance_box_iou(boxes, boxes)
    removed, keep = set(), []
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j not in removed and j != i and groups[j] == groups[i] and diou[i, j] > threshold:
                removed.add(j)
    return torch.tensor(keep, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------- greedy_nms


@pytest.mark.parametrize("block_size", [1, 7, 64, 512, 5000])
def test_greedy_nms_iou_equals_torchvision_batched_nms(block_size):
    g = torch.Generator().manual_seed(0)
    for trial in range(6):
        n = int(torch.randint(1, 1500, (1,), generator=g))
        boxes = random_scene(n, g)
        scores = torch.rand(n, generator=g)
        groups = torch.randint(0, 4, (n,), generator=g)
        threshold = float(torch.rand(1, generator=g)) * 0.8 + 0.1
        expected = tvops.batched_nms(boxes, scores, groups, threshold)
        got = greedy_nms(boxes, scores, groups, threshold, method="iou", block_size=block_size)
        assert torch.equal(got, expected), (trial, n, threshold)


@pytest.mark.parametrize("block_size", [3, 512])
def test_greedy_diou_nms_equals_reference_loop(block_size):
    g = torch.Generator().manual_seed(1)
    boxes = random_scene(300, g, size=120.0)
    scores = torch.rand(300, generator=g)
    groups = torch.randint(0, 3, (300,), generator=g)
    expected = reference_greedy_diou_nms(boxes, scores, groups, 0.45)
    got = greedy_nms(boxes, scores, groups, 0.45, method="diou", block_size=block_size)
    assert torch.equal(got, expected)


def test_greedy_nms_early_stop_keeps_the_top_per_image():
    """With max_per_image, each image's first max_per_image kept boxes are exactly those of the full run."""
    g = torch.Generator().manual_seed(2)
    boxes = random_scene(900, g)
    scores = torch.rand(900, generator=g)
    image = torch.randint(0, 3, (900,), generator=g)
    groups = image * 5 + torch.randint(0, 5, (900,), generator=g)
    full = greedy_nms(boxes, scores, groups, 0.5, method="diou", block_size=50)
    limited = greedy_nms(boxes, scores, groups, 0.5, method="diou", batch_index=image, max_per_image=10,
                         block_size=50)
    for b in range(3):
        assert torch.equal(limited[image[limited] == b][:10], full[image[full] == b][:10])


def test_diou_nms_keeps_a_box_plain_nms_suppresses():
    boxes = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10], [1, 1, 9, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    groups = torch.zeros(3, dtype=torch.long)
    assert tvops.batched_nms(boxes, scores, groups, 0.4).tolist() == [0]
    assert greedy_nms(boxes, scores, groups, 0.4, method="iou").tolist() == [0]
    assert greedy_nms(boxes, scores, groups, 0.4, method="diou").tolist() == [0, 1]
    # Another class never suppresses.
    assert greedy_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.4, method="diou").tolist() == [0, 1, 2]


def test_greedy_nms_empty_and_bad_method():
    empty = torch.zeros(0, 4)
    assert greedy_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
    with pytest.raises(ValueError, match="diou"):
        greedy_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5, method="soft")


def test_top_k_per_image():
    """Images 0,1,0,1,0 with scores .1 .9 .5 .3 .7: top 2 of image 0 are (4: .7, 2: .5), of image 1 (1, 3)."""
    batch = torch.tensor([0, 1, 0, 1, 0])
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7])
    assert top_k_per_image(batch, scores, 2, 2).tolist() == [4, 2, 1, 3]
    assert top_k_per_image(batch, scores, 10, 3).tolist() == [4, 2, 0, 1, 3]


# ---------------------------------------------------------------------------------------------- variance voting


def test_variance_vote_hand_case():
    candidates = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [20, 20, 30, 30], [0, 0, 10, 14]])
    groups = torch.tensor([0, 0, 0, 1])
    log_var = torch.tensor([[0.0] * 4, [math.log(0.5)] * 4, [0.0] * 4, [0.0] * 4])
    voted = variance_vote(candidates[:1], groups[:1], candidates, groups, log_var, sigma_t=0.02)
    w = math.exp(-((1 - 5 / 6) ** 2) / 0.02) / 0.5
    expected = torch.tensor([[0.0, 0.0, 10.0, (10 + 12 * w) / (1 + w)]])
    torch.testing.assert_close(voted, expected)
    assert expected[0, 3].item() == pytest.approx(10.6655, abs=1e-4)


def test_variance_vote_chunks_and_degenerate_kept_box():
    """Chunked and unchunked agree; a zero-area kept box has no overlapping voter and is returned unchanged."""
    g = torch.Generator().manual_seed(3)
    boxes = random_scene(200, g)
    groups = torch.randint(0, 4, (200,), generator=g)
    log_var = torch.randn(200, 4, generator=g)
    kept = torch.arange(0, 200, 9)
    whole = variance_vote(boxes[kept], groups[kept], boxes, groups, log_var)
    chunked = variance_vote(boxes[kept], groups[kept], boxes, groups, log_var, max_elements=60)
    torch.testing.assert_close(whole, chunked)
    point = torch.tensor([[5.0, 5, 5, 5]])
    out = variance_vote(point, torch.tensor([0]), torch.cat((point, boxes)), torch.cat((torch.tensor([0]), groups)),
                        torch.cat((torch.zeros(1, 4), log_var)))
    torch.testing.assert_close(out, point)


# -------------------------------------------------------------------------------------------------- postprocess


def reference_postprocess(boxes, cls_logits, obj_logits, conf_thres, iou_thres, max_det, max_candidates):
    """YOLOv5's recipe, one image at a time: multi-label candidates, top-k, torchvision batched_nms, max_det."""
    out = []
    for b in range(boxes.shape[0]):
        scores = cls_logits[b].sigmoid() * obj_logits[b].sigmoid()[:, None]  # (P, C)
        p, c = (scores > conf_thres).nonzero(as_tuple=True)
        s = scores[p, c]
        top = s.argsort(descending=True)[:max_candidates]
        p, c, s = p[top], c[top], s[top]
        keep = tvops.batched_nms(boxes[b, p], s, c, iou_thres)[:max_det]
        out.append(torch.cat((boxes[b, p[keep]], s[keep, None], c[keep, None].float()), dim=1))
    return out


def random_outputs(batch: int, priors: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([random_scene(priors, g, size=320.0) for _ in range(batch)])  # (B, P, 4)
    cls_logits = torch.randn(batch, priors, classes, generator=g) * 2 - 2
    obj_logits = torch.randn(batch, priors, generator=g) * 2
    return boxes, cls_logits, obj_logits


def test_postprocess_matches_per_image_torchvision_reference():
    boxes, cls_logits, obj_logits = random_outputs(3, 400, 6, seed=4)
    for conf, iou, max_det, max_cand in ((0.001, 0.6, 300, 30000), (0.2, 0.45, 20, 150)):
        got = postprocess(boxes, cls_logits, obj_logits, conf_thres=conf, iou_thres=iou, max_det=max_det,
                          max_candidates=max_cand)
        expected = reference_postprocess(boxes, cls_logits, obj_logits, conf, iou, max_det, max_cand)
        assert len(got) == 3
        for g_rows, e_rows in zip(got, expected):
            torch.testing.assert_close(g_rows, e_rows)
            assert g_rows.shape[0] <= max_det


@pytest.mark.parametrize("max_det", [1, 25, 300])
def test_postprocess_on_score_prefixes_equals_nms_on_every_candidate(max_det):
    """Many candidates per image (1,000 priors x 4 classes at conf 0.001), few detections kept: NMS runs on score
    prefixes (several rounds where max_det is small) and must give what NMS over all candidates gives, for plain
    NMS (YOLOv5's per-image reference) and DIoU-NMS (greedy_nms over every candidate, then the top max_det)."""
    boxes, cls_logits, obj_logits = random_outputs(3, 1000, 4, seed=7)
    obj_logits[2] = -30.0  # image 2: no candidate above conf_thres
    got = postprocess(boxes, cls_logits, obj_logits, conf_thres=0.001, iou_thres=0.5, max_det=max_det)
    expected = reference_postprocess(boxes, cls_logits, obj_logits, 0.001, 0.5, max_det, 30000)
    assert [len(r) for r in got] == [max_det, max_det, 0]
    for g_rows, e_rows in zip(got, expected):
        torch.testing.assert_close(g_rows, e_rows)
    got = postprocess(boxes, cls_logits, obj_logits, conf_thres=0.001, iou_thres=0.5, max_det=max_det, method="diou")
    for b, rows in enumerate(got):
        scores = cls_logits[b].sigmoid() * obj_logits[b].sigmoid()[:, None]  # (P, C)
        p, c = (scores > 0.001).nonzero(as_tuple=True)
        keep = greedy_nms(boxes[b, p], scores[p, c], c, 0.5, method="diou")[:max_det]
        torch.testing.assert_close(rows[:, :4], boxes[b, p[keep]])
        torch.testing.assert_close(rows[:, 5], c[keep].float())


def test_nms_on_prefixes_grows_only_unsettled_images():
    """Image 0: 40 disjoint boxes (all kept); image 1: 40 copies of one box (one kept); image 2: none. With
    max_per_image 5 and a first prefix of 8: image 0 settles at once (8 kept >= 5); image 1 keeps 1 of 8, then 1 of
    32, then 1 of its 40 (all of them: settled with fewer than 5)."""
    disjoint = torch.stack([torch.tensor([20.0 * i, 0, 20 * i + 10, 10]) for i in range(40)])
    same = torch.tensor([[0.0, 0, 10, 10]]).repeat(40, 1)
    boxes = torch.cat((disjoint, same))  # (80, 4)
    scores = torch.cat((torch.linspace(1, 0.5, 40), torch.linspace(1, 0.5, 40)))
    batch_index = torch.cat((torch.zeros(40, dtype=torch.long), torch.ones(40, dtype=torch.long)))
    calls = []

    def suppress(index):
        calls.append(sorted(set(batch_index[index].tolist())) + [index.numel()])
        return index[tvops.batched_nms(boxes[index], scores[index], batch_index[index], 0.5)]

    kept = nms_on_prefixes(suppress, batch_index, 3, max_per_image=5, first=8)
    assert calls == [[0, 1, 16], [1, 32], [1, 40]]  # (images in the call..., candidates in the call)
    assert sorted(kept.tolist()) == list(range(8)) + [40]
    assert nms_on_prefixes(suppress, batch_index[:0], 2, max_per_image=5).numel() == 0


def test_postprocess_diou_keeps_the_hand_case_box():
    """The DIoU hand case through postprocess (class scores only): plain NMS keeps A, DIoU-NMS keeps A and B."""
    boxes = torch.tensor([[[0.0, 0, 10, 10], [4, 0, 14, 10], [1, 1, 9, 9]]])  # (1, 3, 4)
    cls_logits = torch.tensor([[[2.2], [1.4], [0.85]]])  # sigmoid: 0.90, 0.80, 0.70
    iou_rows = postprocess(boxes, cls_logits, None, iou_thres=0.4, method="iou")[0]
    diou_rows = postprocess(boxes, cls_logits, None, iou_thres=0.4, method="diou")[0]
    assert iou_rows[:, :4].tolist() == [[0.0, 0, 10, 10]]
    assert diou_rows[:, :4].tolist() == [[0.0, 0, 10, 10], [4, 0, 14, 10]]
    torch.testing.assert_close(diou_rows[:, 4], cls_logits[0, :2, 0].sigmoid())


def test_postprocess_scores_without_objectness_and_single_label():
    """obj None: score = sigmoid(cls). multi_label=False: one row per prior, its best class.

    Prior 0 has class logits (2, 1): sigmoid 0.881 and 0.731, both above 0.5; prior 1 (-3, 0.5): only class 1
    (0.622). Boxes are far apart, so NMS removes nothing. Multi-label: 3 rows; single-label: 2 rows.
    """
    boxes = torch.tensor([[[0.0, 0, 10, 10], [50, 50, 60, 60]]])
    cls_logits = torch.tensor([[[2.0, 1.0], [-3.0, 0.5]]])
    multi = postprocess(boxes, cls_logits, None, conf_thres=0.5)[0]
    single = postprocess(boxes, cls_logits, None, conf_thres=0.5, multi_label=False)[0]
    s = torch.sigmoid(torch.tensor([2.0, 1.0, 0.5]))
    torch.testing.assert_close(multi[:, 4:], torch.stack((s, torch.tensor([0.0, 1.0, 1.0])), dim=1))
    torch.testing.assert_close(single[:, 4:], torch.stack((s[[0, 2]], torch.tensor([0.0, 1.0])), dim=1))


def test_postprocess_objectness_multiplies():
    boxes = torch.tensor([[[0.0, 0, 10, 10]]])
    cls_logits = torch.tensor([[[1.0]]])
    obj_logits = torch.tensor([[0.5]])
    rows = postprocess(boxes, cls_logits, obj_logits)[0]
    assert rows[0, 4].item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item()
                                              * torch.sigmoid(torch.tensor(0.5)).item())


def test_postprocess_empty_and_errors():
    boxes, cls_logits, obj_logits = random_outputs(2, 5, 3, seed=5)
    out = postprocess(boxes, cls_logits, obj_logits, conf_thres=1.0)
    assert [o.shape for o in out] == [(0, 6), (0, 6)]
    out = postprocess(boxes[:, :0], cls_logits[:, :0], obj_logits[:, :0], method="diou")
    assert [o.shape for o in out] == [(0, 6), (0, 6)]
    with pytest.raises(ValueError, match="method"):
        postprocess(boxes, cls_logits, obj_logits, method="soft")
    with pytest.raises(ValueError, match="box_log_var"):
        postprocess(boxes, cls_logits, obj_logits, variance_voting=True)
    with pytest.raises(ValueError, match="boxes"):
        postprocess(boxes[:, :4], cls_logits, obj_logits)


def test_postprocess_variance_voting_hand_case():
    """The voting hand case of the module docstring through postprocess: B (IoU 5/6 > 0.6) is suppressed by A
    and votes; E, of the other class, survives NMS and votes for nobody else."""
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 12], [20, 20, 30, 30], [0, 0, 10, 14]]])
    # class 0 for the first three priors, class 1 for the last; scores decreasing A > B > D and E alone.
    cls_logits = torch.tensor([[[3.0, -9.0], [2.0, -9.0], [1.0, -9.0], [-9.0, 0.0]]])
    log_var = torch.tensor([[[0.0] * 4, [math.log(0.5)] * 4, [0.0] * 4, [0.0] * 4]])
    rows = postprocess(boxes, cls_logits, None, conf_thres=0.3, iou_thres=0.6, box_log_var=log_var,
                       variance_voting=True)[0]
    w = math.exp(-((1 - 5 / 6) ** 2) / 0.02) / 0.5
    expected_boxes = torch.tensor([[0.0, 0, 10, (10 + 12 * w) / (1 + w)], [20, 20, 30, 30], [0, 0, 10, 14]])
    torch.testing.assert_close(rows[:, :4], expected_boxes)
    torch.testing.assert_close(rows[:, 5], torch.tensor([0.0, 0.0, 1.0]))
    for method in ("iou", "diou"):
        plain = postprocess(boxes, cls_logits, None, conf_thres=0.3, iou_thres=0.6, method=method)[0]
        torch.testing.assert_close(plain[:, :4], boxes[0, [0, 2, 3]])


def test_postprocess_without_suppression_keeps_the_top_scores():
    """method "none" (one-to-one heads): two identical boxes both stay (NMS would drop one); with max_det 2 the
    three candidates above conf 0.5 (0.90, 0.80, 0.70 after sigmoid) lose their lowest, 0.70, whatever its box."""
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]])
    cls_logits = torch.tensor([[[2.2], [1.4], [0.85]]])  # sigmoid 0.900, 0.802, 0.701
    rows = postprocess(boxes, cls_logits, None, conf_thres=0.5, method="none")[0]
    assert rows[:, :4].tolist() == boxes[0].tolist()
    top2 = postprocess(boxes, cls_logits, None, conf_thres=0.5, method="none", max_det=2)[0]
    assert top2[:, :4].tolist() == boxes[0, :2].tolist()
    torch.testing.assert_close(top2[:, 4], cls_logits[0, :2, 0].sigmoid())
