"""Tests of NWD-NMS: ``greedy_nms(method="nwd")``, ``postprocess_scores(method="nwd")`` and ``eval.nms: nwd`` /
``eval.nwd_constant`` through ``predict``.

NWD = exp(-W_2 / C), W_2 the distance of the ``(cx, cy, w/2, h/2)`` vectors; C = 12.8 px unless said. A box is
suppressed when its NWD with a kept, higher-scored box of its class is > the threshold (as IoU-NMS: ``>``).

Hand case 1 (threshold 0.6), 4 x 4 boxes of one class:
    A = (0, 0, 4, 4) 0.9;  B = (1, 0, 5, 4) 0.8;  C = (10, 0, 14, 4) 0.7.
    NWD(A, B) = exp(-1 / 12.8) = 0.9248 > 0.6: B suppressed (IoU 12 / 20 = 0.6 is not > 0.6: IoU-NMS keeps it).
    NWD(A, C) = exp(-10 / 12.8) = 0.4578 <= 0.6: C kept. At threshold 0.45, C goes too (0.4578 > 0.45).

Hand case 2 (threshold 0.6), tiny 2 x 2 boxes: D = (0, 0, 2, 2) 0.9, E = (3, 0, 5, 2) 0.8, a 1 px gap.
    IoU 0: IoU-NMS keeps both. NWD = exp(-3 / 12.8) = 0.7911 > 0.6: NWD-NMS keeps D only.
    With C = 2 px: NWD = exp(-1.5) = 0.2231 <= 0.6: both kept. In another class, E is never suppressed by D.

Hand case 3, greedy order (threshold 0.7), 2 x 2 boxes at x = 0, 3, 6 with scores 0.9, 0.8, 0.7:
    NWD(0, 1) = NWD(1, 2) = exp(-3 / 12.8) = 0.7911, NWD(0, 2) = exp(-6 / 12.8) = 0.6258.
    Box 1 goes (0.7911 > 0.7); box 2 is only compared with the kept box 0 (0.6258 <= 0.7): kept.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from detector.config import load_config
from detector.engine.evaluate import predict
from detector.errors import ConfigError
from detector.ops.nms import NMS_METHODS, greedy_nms, postprocess_scores


def reference_greedy_nwd_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float,
                             constant: float) -> list[int]:
    """The textbook loop with the paper's formula in Python floats."""
    def nwd(a, b):
        ga = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2, (a[2] - a[0]) / 2, (a[3] - a[1]) / 2)
        gb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2)
        return math.exp(-math.dist(ga, gb) / constant)

    rows, group = boxes.tolist(), groups.tolist()
    remaining = scores.argsort(descending=True).tolist()
    kept = []
    while remaining:
        best = remaining.pop(0)
        kept.append(best)
        remaining = [i for i in remaining if group[i] != group[best] or nwd(rows[best], rows[i]) <= threshold]
    return kept


def one_class(*rows):
    boxes = torch.tensor([r[:4] for r in rows], dtype=torch.float32)
    scores = torch.tensor([r[4] for r in rows], dtype=torch.float32)
    return boxes, scores, torch.zeros(len(rows), dtype=torch.long)


def test_nwd_is_an_nms_method():
    assert "nwd" in NMS_METHODS


def test_hand_case_1_shifted_boxes():
    boxes, scores, groups = one_class((0, 0, 4, 4, 0.9), (1, 0, 5, 4, 0.8), (10, 0, 14, 4, 0.7))
    assert greedy_nms(boxes, scores, groups, 0.6, method="nwd").tolist() == [0, 2]
    assert greedy_nms(boxes, scores, groups, 0.45, method="nwd").tolist() == [0]
    assert greedy_nms(boxes, scores, groups, 0.6, method="iou").tolist() == [0, 1, 2]


def test_hand_case_2_tiny_boxes_that_do_not_overlap():
    boxes, scores, groups = one_class((0, 0, 2, 2, 0.9), (3, 0, 5, 2, 0.8))
    assert greedy_nms(boxes, scores, groups, 0.6, method="iou").tolist() == [0, 1]
    assert greedy_nms(boxes, scores, groups, 0.6, method="nwd").tolist() == [0]
    assert greedy_nms(boxes, scores, groups, 0.6, method="nwd", nwd_constant=2.0).tolist() == [0, 1]
    assert greedy_nms(boxes, scores, torch.tensor([0, 1]), 0.6, method="nwd").tolist() == [0, 1]


def test_hand_case_3_a_suppressed_box_suppresses_nothing():
    boxes, scores, groups = one_class((0, 0, 2, 2, 0.9), (3, 0, 5, 2, 0.8), (6, 0, 8, 2, 0.7))
    assert greedy_nms(boxes, scores, groups, 0.7, method="nwd").tolist() == [0, 2]


@pytest.mark.parametrize("block_size", [512, 7])
def test_agrees_with_the_textbook_loop(block_size):
    """Random tiny and small boxes in 4 groups, several thresholds; small blocks exercise the block merging."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(150, 2, generator=g) * 120
    boxes = torch.cat((xy, xy + torch.rand(150, 2, generator=g) * 12 + 1), 1)
    scores = torch.rand(150, generator=g)
    groups = torch.randint(0, 4, (150,), generator=g)
    for threshold, constant in ((0.3, 12.8), (0.6, 12.8), (0.8, 12.8), (0.5, 4.0)):
        got = greedy_nms(boxes, scores, groups, threshold, method="nwd", block_size=block_size,
                         nwd_constant=constant)
        assert got.tolist() == reference_greedy_nwd_nms(boxes, scores, groups, threshold, constant)


def test_empty_and_invalid():
    empty = greedy_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.6, method="nwd")
    assert empty.shape == (0,) and empty.dtype == torch.long
    boxes, scores, groups = one_class((0, 0, 2, 2, 0.9))
    with pytest.raises(ValueError, match=r"nwd_constant \(eval.nwd_constant\) must be > 0"):
        greedy_nms(boxes, scores, groups, 0.6, method="nwd", nwd_constant=0.0)
    dets = postprocess_scores(torch.zeros(2, 3, 4), torch.zeros(2, 3, 1), method="nwd")  # nothing above conf_thres
    assert [d.shape for d in dets] == [(0, 6), (0, 6)]


def test_postprocess_scores_per_image_and_class():
    """Image 0: hand case 2 (D, E one class) -> D only; image 1: the same boxes with E in class 1 -> both."""
    boxes = torch.tensor([[0.0, 0, 2, 2], [3, 0, 5, 2]]).repeat(2, 1, 1)  # (B=2, P=2, 4)
    scores = torch.tensor([[[0.9, 0.0], [0.8, 0.0]], [[0.9, 0.0], [0.0, 0.8]]])  # (2, 2, C=2)
    dets = postprocess_scores(boxes, scores, conf_thres=0.1, iou_thres=0.6, method="nwd")
    assert dets[0].tolist() == [[0, 0, 2, 2, pytest.approx(0.9), 0]]
    assert [row[5] for row in dets[1].tolist()] == [0, 1]
    loose = postprocess_scores(boxes, scores, conf_thres=0.1, iou_thres=0.6, method="nwd", nwd_constant=2.0)
    assert len(loose[0]) == 2


def test_config_keys_reach_predict():
    """eval.nms: nwd and eval.nwd_constant go from the config through predict to the NMS: hand case 2 through a
    stub model whose outputs are already decoded boxes (logit 5: score 0.993)."""
    boxes = torch.tensor([[[0.0, 0, 2, 2], [3, 0, 5, 2]]])  # (1, 2, 4)
    outputs = SimpleNamespace(box=boxes, cls=torch.full((1, 2, 1), 5.0), obj=None, quality=None, box_log_var=None,
                              background=False, priors=None)
    model, coder = (lambda images: outputs), SimpleNamespace(decode=lambda box, priors: box)
    images = torch.zeros(1, 3, 8, 8)
    cfg = load_config("yolov5_ciou", ["eval.nms=nwd"])
    assert (cfg.eval.nms, cfg.eval.nwd_constant) == ("nwd", 12.8)
    assert len(predict(model, coder, images, cfg.eval)[0]) == 1
    assert len(predict(model, coder, images, load_config("yolov5_ciou", ["eval.nms=iou"]).eval)[0]) == 2
    cfg = load_config("yolov5_ciou", ["eval.nms=nwd", "eval.nwd_constant=2.0"])
    assert len(predict(model, coder, images, cfg.eval)[0]) == 2


def test_config_errors_name_the_key_and_the_valid_values():
    with pytest.raises(ConfigError, match=r"--set eval.nwd_constant=0: eval.nwd_constant: 0.0 must be > 0"):
        load_config("yolov5_ciou", ["eval.nwd_constant=0"])
    with pytest.raises(ConfigError, match=r"eval.nms: 'nwdd' is not one of iou, diou, nwd, none, peaks"):
        load_config("yolov5_ciou", ["eval.nms=nwdd"])
