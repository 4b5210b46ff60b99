"""NWD as the similarity of the max-IoU family (rpn, retinanet, max_iou, ssd), of ATSS and of TAL's metric
(detector/assigners/similarity.py and the assigners that use it), and its config reachability.

NWD = exp(-W_2 / C), W_2 = ||(cx, cy, w/2, h/2) - (cx', cy', w'/2, h'/2)||, C = 12.8 px unless said.

Max-IoU hand case ("gap anchors"): one level of stride 16, one 8 x 8 anchor per cell on a 2 x 2 grid, so the anchors
are ``[4, 4, 12, 12]``, ``[20, 4, 28, 12]``, ``[4, 20, 12, 28]``, ``[20, 20, 28, 28]`` with 8 px gaps between them.
A tiny 4 x 4 box (14, 9, 18, 13) sits in the gap between anchors 0 and 1: IoU 0 with all four, so IoU matching,
low-quality matches included, gives it nothing (a gt whose best IoU is 0 forces no match).
NWD: box (cx, cy, w/2, h/2) = (16, 11, 2, 2); anchors (8, 8, 4, 4), (24, 8, 4, 4), (8, 24, 4, 4), (24, 24, 4, 4):
    anchors 0, 1: W_2^2 = 8^2 + 3^2 + 2^2 + 2^2 = 81, W_2 = 9, NWD = exp(-9 / 12.8) = 0.495036;
    anchors 2, 3: W_2^2 = 8^2 + 13^2 + 8 = 241, W_2 = 15.5242, NWD = exp(-1.212826) = 0.297356.
    RPN (0.7 / 0.3, low quality): 0.495 is in the ignore band, 0.297 < 0.3 negative; anchors 0 and 1 tie as the
    gt's best, so both are positive. Without low-quality matches both are ignored.
    SSD (0.5): nothing reaches 0.5; the gt forces its best anchor, the lower index of the tie: anchor 0.
"""
from __future__ import annotations

import math

import pytest
import torch

from detector import build
from detector.assigners.atss import ATSSAssigner, assign_atss
from detector.assigners.common import pad_targets
from detector.assigners.max_iou import MaxIoUAssigner, SSDAssigner, gt_prior_iou
from detector.assigners.similarity import SIMILARITIES, check_similarity
from detector.assigners.tal import TaskAlignedAssigner, assign_tal
from detector.config import load_config
from detector.errors import ConfigError
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.structures import Assignment, Predictions


def gap_anchors():
    return AnchorPriorGenerator([[[8, 8]]], [16])([(2, 2)])


def tile_priors():
    return AnchorPriorGenerator([[[16, 16]]], [16])([(2, 2)])


def targets_of(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return list(zip(assignment.batch_index.tolist(), assignment.prior_index.tolist(), assignment.gt_index.tolist()))


def ignored(assignment: Assignment) -> list[tuple[int, int]]:
    return [tuple(x) for x in assignment.ignore.nonzero().tolist()]


GAP_BOX = targets_of([0, 0, 14, 9, 18, 13])


# ------------------------------------------------------------------------------------------------------ max-IoU


def test_gap_anchors_similarity_values():
    padded = pad_targets(GAP_BOX, 1)
    assert gt_prior_iou(gap_anchors(), padded).tolist() == [[[0.0] * 4]]
    nwd = gt_prior_iou(gap_anchors(), padded, "nwd")
    expected = [math.exp(-9 / 12.8)] * 2 + [math.exp(-math.sqrt(241) / 12.8)] * 2
    assert expected == pytest.approx([0.495036, 0.495036, 0.297356, 0.297356], abs=1e-6)
    torch.testing.assert_close(nwd, torch.tensor([[expected]]))
    assert nwd[0, 0, 0] == nwd[0, 0, 1]  # an exact tie: the distance is taken before dividing by C


def test_max_iou_family_matches_a_tiny_box_iou_leaves_unmatched():
    """The module docstring's gap-anchor case, for rpn, rpn without low quality, retinanet and ssd."""
    priors = gap_anchors()
    for similarity in ("iou", "nwd"):
        rpn = MaxIoUAssigner(0.7, 0.3, similarity=similarity)(priors, GAP_BOX, 1)
        strict = MaxIoUAssigner(0.7, 0.3, allow_low_quality_matches=False, similarity=similarity)(priors, GAP_BOX, 1)
        retina = MaxIoUAssigner(0.5, 0.4, similarity=similarity)(priors, GAP_BOX, 1)
        ssd = SSDAssigner(0.5, similarity=similarity)(priors, GAP_BOX, 1)
        if similarity == "iou":
            assert pairs(rpn) == pairs(strict) == pairs(retina) == pairs(ssd) == []
            assert ignored(rpn) == ignored(strict) == []
        else:
            assert pairs(rpn) == [(0, 0, 0), (0, 1, 0)] and ignored(rpn) == []
            assert pairs(strict) == [] and ignored(strict) == [(0, 0), (0, 1)]
            assert pairs(retina) == [(0, 0, 0), (0, 1, 0)]
            assert pairs(ssd) == [(0, 0, 0)]


def test_thresholds_apply_to_nwd():
    """16 x 16 tiles (anchors (0, 0, 16, 16), ...); a 4 x 4 box (6, 6, 10, 10) at the centre of tile 0: IoU
    16 / 256 = 0.0625. NWD with tile 0: W_2 = sqrt(6^2 + 6^2) = 8.485, exp(-0.662913) = 0.515348 >= 0.5; with
    tiles 1, 2 (centre 16 px away): sqrt(256 + 72) = 18.111, exp(-1.414913) = 0.242949. RetinaNet's 0.5 / 0.4
    without low-quality matches: IoU gives nothing, NWD makes tile 0 positive outright (and tiles 1-3 negative)."""
    priors, box = tile_priors(), targets_of([0, 0, 6, 6, 10, 10])
    assert pairs(MaxIoUAssigner(0.5, 0.4, allow_low_quality_matches=False)(priors, box, 1)) == []
    nwd = MaxIoUAssigner(0.5, 0.4, allow_low_quality_matches=False, similarity="nwd")(priors, box, 1)
    assert pairs(nwd) == [(0, 0, 0)] and ignored(nwd) == []
    values = gt_prior_iou(priors, pad_targets(box, 1), "nwd")[0, 0]
    assert values[:3].tolist() == pytest.approx([0.515348, 0.242949, 0.242949], abs=1e-6)
    # C = 64 flattens NWD: exp(-8.485 / 64) = 0.8758, exp(-18.111 / 64) = 0.7535 (tiles 1, 2), and for tile 3
    # (W_2 = sqrt(512 + 72) = 24.166) 0.6856: with thresholds 0.4 / 0.9 all four are in the ignore band
    wide = MaxIoUAssigner(0.9, 0.4, allow_low_quality_matches=False, similarity="nwd", nwd_constant=64.0)
    result = wide(priors, box, 1)
    assert pairs(result) == [] and ignored(result) == [(0, p) for p in range(4)]


def test_empty_targets_with_nwd():
    for assigner in (MaxIoUAssigner(0.7, 0.3, similarity="nwd"), SSDAssigner(similarity="nwd"),
                     ATSSAssigner(similarity="nwd")):
        empty = assigner(gap_anchors(), torch.zeros(0, 6), 2)
        assert empty.num_pos == 0


# --------------------------------------------------------------------------------------------------------- ATSS


def two_levels():
    """Point priors: stride 8 on 4 x 4 (priors 0-15, centre (8 gx + 4, 8 gy + 4)), stride 16 on 2 x 2 (16-19)."""
    return PointPriorGenerator([8, 16])([(4, 4), (2, 2)])


def test_atss_tiny_box_whose_ious_tie_per_level():
    """Box (10, 10, 14, 14), 4 x 4 about prior 5's centre (12, 12); anchor_scale 5 (YOLOv6 / PP-YOLOE): prior boxes
    are 40 px squares at stride 8, 80 px at stride 16. Candidates: 9 on level 0 (prior 5 at distance 0, four at
    8 px, four at 8 sqrt 2) and the 4 priors of level 1 (d^2 = 32, 160, 160, 288 from (8, 8), (24, 8), (8, 24),
    (24, 24)). Every candidate box contains the tiny box.

    IoU: 16 / 1600 = 0.01 on level 0 (all 9), 16 / 6400 = 0.0025 on level 1 (all 4). Mean 0.1 / 13 = 0.0076923,
    unbiased std 0.0036029, threshold 0.0112952 > 0.01: no positive. The IoU cannot tell the candidates of a level
    apart.
    NWD, C = 6.4 (the rule of thumb C ~ object size, for 4 px objects): W_2^2 = d^2 + 2 s^2 with s the difference of
    half sides, 18 on level 0, 38 on level 1. Prior 5: sqrt(648) = 25.456, NWD exp(-3.9775) = 0.018733; the four at
    8 px: sqrt(712), 0.015464; at 8 sqrt 2: sqrt(776), 0.012873; level 1: sqrt(2920), sqrt(3048) x 2, sqrt(3176):
    0.000215, 0.000179, 0.000150. Mean 0.010216, std 0.007152, threshold 0.017367 < 0.018733: prior 5 is positive
    (its centre is 2 px inside the box); the ring at 8 px (0.015464) is not.
    With the paper's C = 12.8 the values flatten (0.136868 against a threshold 0.139886): no positive either.
    """
    box = targets_of([0, 0, 10, 10, 14, 14])
    assert assign_atss(two_levels(), box, 1, anchor_scale=5).num_pos == 0
    assert assign_atss(two_levels(), box, 1, anchor_scale=5, similarity="nwd").num_pos == 0
    result = ATSSAssigner(anchor_scale=5, similarity="nwd", nwd_constant=6.4)(two_levels(), box, 1)
    assert pairs(result) == [(0, 5, 0)]
    assert result.extras["iou"].tolist() == pytest.approx([0.018733], abs=1e-6)
    assert result.extras["iou_threshold"].tolist() == pytest.approx([0.017367], abs=1e-6)


def test_atss_tiny_box_without_a_prior_centre_stays_unmatched():
    """Box (13, 13, 15, 15) contains no prior centre (the nearest, (12, 12), is 1 px outside): ATSS's inside rule
    rejects every candidate whatever the similarity. On a 640 input (80/40/20 grids, anchor_scale 8) this rule, not
    the IoU, is what leaves most 2-4 px boxes unmatched, so NWD changes little there (docs/assigners.md)."""
    box = targets_of([0, 0, 13, 13, 15, 15])
    for similarity, constant in (("iou", 12.8), ("nwd", 12.8), ("nwd", 6.4), ("nwd", 1.0)):
        assert assign_atss(two_levels(), box, 1, anchor_scale=5, similarity=similarity,
                           nwd_constant=constant).num_pos == 0


# ---------------------------------------------------------------------------------------------------------- TAL


def test_tal_nwd_metric_rewards_a_disjoint_prediction_of_a_tiny_box():
    """Level of stride 8 with 1 x 3 cells (centres (4, 4), (12, 4), (20, 4)); gt (2, 2, 6, 6) class 0, whose only
    candidate is prior 0 (centre 2 px inside). Prior 0 predicts (7, 2, 11, 6) with score 0.5: 1 px beside the gt,
    IoU 0 (CIoU < 0, clamped to 0), so the metric s * u is 0 and TAL (iou or ciou) gives no positive. NWD: W_2 = 5,
    u = exp(-5 / 12.8) = 0.676634, metric (alpha = beta = 1) 0.5 * 0.676634 = 0.338317, positive; its soft score is
    t / max t * max u = 0.676634. With YOLOv8's alpha 0.5, beta 6: metric sqrt(0.5) * 0.676634^6 = 0.067859."""
    priors = PointPriorGenerator([8])([(1, 3)])
    gt = targets_of([0, 0, 2, 2, 6, 6])
    pred_boxes = torch.tensor([[[7.0, 2, 11, 6], [8, 0, 16, 8], [16, 0, 24, 8]]])
    pred_scores = torch.tensor([[[0.5], [0.9], [0.9]]])
    for iou_type in ("iou", "ciou"):
        assert assign_tal(priors, gt, 1, pred_boxes, pred_scores, alpha=1.0, beta=1.0, iou_type=iou_type).num_pos == 0
    result = assign_tal(priors, gt, 1, pred_boxes, pred_scores, alpha=1.0, beta=1.0, iou_type="nwd")
    assert pairs(result) == [(0, 0, 0)]
    assert result.extras["iou"].tolist() == pytest.approx([0.676634], abs=1e-6)
    assert result.extras["align_metric"].tolist() == pytest.approx([0.338317], abs=1e-6)
    assert result.score.tolist() == pytest.approx([0.676634], abs=1e-6)
    yolov8 = TaskAlignedAssigner(iou_type="nwd")(priors, gt, 1, Predictions(pred_boxes, pred_scores))
    assert yolov8.extras["align_metric"].tolist() == pytest.approx([0.067859], abs=1e-6)
    wide = assign_tal(priors, gt, 1, pred_boxes, pred_scores, alpha=1.0, beta=1.0, iou_type="nwd", nwd_constant=5.0)
    assert wide.extras["iou"].tolist() == pytest.approx([math.exp(-1)], abs=1e-6)


# ----------------------------------------------------------------------------------------- config and defaults


def test_defaults_are_iou_and_reprs_unchanged():
    assert SIMILARITIES == ("iou", "nwd")
    assert MaxIoUAssigner(0.7, 0.3).similarity == SSDAssigner().similarity == ATSSAssigner().similarity == "iou"
    assert TaskAlignedAssigner().iou_type == "ciou"
    assert repr(ATSSAssigner()) == "ATSSAssigner(topk=9, anchor_scale=8.0)"
    assert repr(SSDAssigner()) == "SSDAssigner(iou_threshold=0.5)"
    assert repr(ATSSAssigner(similarity="nwd")) == (
        "ATSSAssigner(topk=9, anchor_scale=8.0, similarity='nwd', nwd_constant=12.8)"
    )


def test_config_reaches_every_assigner():
    cfg = load_config("atss", ["assigner.similarity=nwd", "assigner.nwd_constant=6.4"])
    build.check_parts(cfg)
    atss = build.build_assigner(cfg)
    assert isinstance(atss, ATSSAssigner) and (atss.similarity, atss.nwd_constant, atss.topk) == ("nwd", 6.4, 9)
    rpn = build.build_assigner(load_config("rpn", ["assigner.similarity=nwd"]))
    assert (rpn.pos_iou, rpn.neg_iou, rpn.similarity, rpn.nwd_constant) == (0.7, 0.3, "nwd", 12.8)
    retina = build.build_assigner(load_config("retinanet_focal", ["assigner.similarity=nwd"]))
    assert (retina.pos_iou, retina.neg_iou, retina.similarity) == (0.5, 0.4, "nwd")
    assert build.build_assigner(load_config("ssd", ["assigner.similarity=nwd"])).similarity == "nwd"
    tal = build.build_assigner(load_config("yolov8_tal", ["assigner.iou_type=nwd", "assigner.nwd_constant=8"]))
    assert (tal.iou_type, tal.nwd_constant) == ("nwd", 8)


def test_unknown_similarity_names_the_key_and_the_valid_values(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: atss.yaml\nassigner:\n  name: atss\n  similarity: giou\n")
    with pytest.raises(ConfigError) as err:
        build.check_parts(load_config(path))
    assert f"{path}:2: assigner: ATSSAssigner: similarity must be one of iou, nwd, got 'giou'" in str(err.value)
    with pytest.raises(ConfigError, match="assigner.similarity: expected a string"):
        build.check_parts(load_config("rpn", ["assigner.similarity=1"]))
    with pytest.raises(ConfigError, match="nwd_constant must be a finite number > 0"):
        build.check_parts(load_config("ssd", ["assigner.similarity=nwd", "assigner.nwd_constant=0"]))
    with pytest.raises(ConfigError, match=r"iou_type must be one of \('iou', 'ciou', 'nwd'\)"):
        build.check_parts(load_config("yolov8_tal", ["assigner.iou_type=giou"]))
    with pytest.raises(ValueError, match="MaxIoUAssigner: similarity must be one of iou, nwd, got 'wasserstein'"):
        MaxIoUAssigner(0.7, 0.3, similarity="wasserstein")
    with pytest.raises(ValueError, match="nwd_constant"):
        check_similarity("nwd", float("inf"), "here")
