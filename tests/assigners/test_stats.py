"""Tests of detector/assigners/stats.py (assignment_stats, format_assignment_table).

Priors come from the real generators. The small hand-worked layout: point priors with strides 8 and 16 on
levels of ``(H, W) = (2, 2)`` and ``(1, 2)``, so P = 6: priors 0..3 on level 0, 4..5 on level 1.
"""
from __future__ import annotations

import pytest
import torch

from detector.assigners import YOLOv5Assigner, assign_yolov5_ratio
from detector.assigners.stats import assignment_stats, format_assignment_table
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.structures import Assignment

P3 = [(10.0, 13.0), (16.0, 30.0), (33.0, 23.0)]
P4 = [(30.0, 61.0), (62.0, 45.0), (59.0, 119.0)]
P5 = [(116.0, 90.0), (156.0, 198.0), (373.0, 326.0)]


def small_priors():
    return PointPriorGenerator([8, 16])([(2, 2), (1, 2)])


def pairs(*rows) -> Assignment:
    """Assignment from ``(image, prior, gt)`` rows."""
    t = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
    return Assignment(batch_index=t[:, 0], prior_index=t[:, 1], gt_index=t[:, 2])


def targets(n: int) -> torch.Tensor:
    """n dummy rows (only their number is read)."""
    return torch.zeros(n, 6)


def floats(stats: dict) -> dict:
    return {k: float(v) for k, v in stats.items()}


def test_docstring_worked_example():
    """B = 2, P = 6, n = 3; pairs (0, 1, 0), (0, 4, 0), (1, 1, 2), (1, 1, 2) (a duplicate, as YOLOv5 keeps);
    prior 5 of image 0 ignored.

    num_pos = 4 pairs / 2 images = 2; pos_per_gt = 4 / 3; rows 0 and 2 have pairs, row 1 none: unmatched 1/3.
    Pair priors 1, 4, 1, 1 are on levels 0, 1, 0, 0: shares 3/4 and 1/4. ignored = 1 / 2.
    Positive priors (once each): (0, 1), (0, 4), (1, 1) -> 3; negatives = (2 * 6 - 3 - 1) / 2 = 4.
    """
    a = pairs((0, 1, 0), (0, 4, 0), (1, 1, 2), (1, 1, 2))
    ignore = torch.zeros(2, 6, dtype=torch.bool)
    ignore[0, 5] = True
    a.ignore = ignore
    got = floats(assignment_stats(a, targets(3), small_priors(), batch_size=2))
    assert got == pytest.approx({"num_pos": 2.0, "pos_per_gt": 4 / 3, "unmatched_gt": 1 / 3, "pos_level_0": 0.75,
                                 "pos_level_1": 0.25, "ignored": 0.5, "negatives": 4.0})


def test_values_are_float_scalars_on_the_input_device():
    stats = assignment_stats(pairs((0, 1, 0)), targets(1), small_priors(), batch_size=1)
    assert set(stats) == {"num_pos", "pos_per_gt", "unmatched_gt", "pos_level_0", "pos_level_1", "ignored",
                          "negatives"}
    for name, value in stats.items():
        assert isinstance(value, torch.Tensor) and value.shape == () and value.dtype == torch.float32, name
        assert value.device == torch.device("cpu"), name


def test_yolov5_worked_example_one_level():
    """YOLOv5's docstring case: one level (3, 10, 10) of stride 8, box 8 x 6 centred at (27, 44) -> priors 52, 53
    of image 0 (gt 0). With B = 2 (image 1 empty): num_pos 2 / 2 = 1, pos_per_gt 2 / 1, unmatched 0, all pairs on
    level 0, nothing ignored, negatives (2 * 300 - 2) / 2 = 299.
    A centre on the bottom border (28, 80) gives prior 93 twice: 2 pairs but one positive prior, so
    negatives (600 - 1) / 2 = 299.5."""
    priors = AnchorPriorGenerator([P3], [8])([(10, 10)])
    t = torch.tensor([[0, 3, 23, 41, 31, 47]], dtype=torch.float32)
    got = floats(assignment_stats(assign_yolov5_ratio(priors, t, 2), t, priors, batch_size=2))
    assert got == pytest.approx({"num_pos": 1.0, "pos_per_gt": 2.0, "unmatched_gt": 0.0, "pos_level_0": 1.0,
                                 "ignored": 0.0, "negatives": 299.0})
    border = torch.tensor([[0, 3, 24, 77, 32, 83]], dtype=torch.float32)
    a = assign_yolov5_ratio(priors, border, 2)
    assert a.prior_index.tolist() == [93, 93]
    got = floats(assignment_stats(a, border, priors, batch_size=2))
    assert got["num_pos"] == 1.0 and got["pos_per_gt"] == 2.0 and got["negatives"] == 299.5


def test_no_targets():
    """n = 0 and no pairs: every count and share is 0 (not NaN), every prior of every image is negative."""
    got = floats(assignment_stats(Assignment.empty(), targets(0), small_priors(), batch_size=3))
    assert got == {"num_pos": 0.0, "pos_per_gt": 0.0, "unmatched_gt": 0.0, "pos_level_0": 0.0, "pos_level_1": 0.0,
                   "ignored": 0.0, "negatives": 6.0}


def test_targets_but_no_pairs():
    """n = 2 rows, no pair (every box too far from every anchor, say): both rows unmatched, 0 positives per
    gt, level shares 0 (no pairs to share), all 6 priors negative."""
    got = floats(assignment_stats(Assignment.empty(), targets(2), small_priors(), batch_size=1))
    assert got == {"num_pos": 0.0, "pos_per_gt": 0.0, "unmatched_gt": 1.0, "pos_level_0": 0.0, "pos_level_1": 0.0,
                   "ignored": 0.0, "negatives": 6.0}


def test_one_gt_with_no_pairs_among_several():
    """n = 4, pairs only for rows 0 and 3 (two pairs for row 3): unmatched 2 / 4; pos_per_gt 3 / 4."""
    a = pairs((0, 0, 0), (0, 5, 3), (0, 2, 3))
    got = floats(assignment_stats(a, targets(4), small_priors(), batch_size=1))
    assert got["unmatched_gt"] == 0.5 and got["pos_per_gt"] == 0.75
    assert got["pos_level_0"] == pytest.approx(2 / 3) and got["pos_level_1"] == pytest.approx(1 / 3)


def test_ignore_mask_counts_per_image():
    """B = 2, P = 6. Image 0 ignores priors 2, 3; image 1 ignores 0, 1, 2. Positives: (0, 0) and (1, 5).
    ignored = 5 / 2 = 2.5; negatives = (12 - 2 positive - 5 ignored) / 2 = 2.5."""
    a = pairs((0, 0, 0), (1, 5, 1))
    a.ignore = torch.tensor([[0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    got = floats(assignment_stats(a, targets(2), small_priors(), batch_size=2))
    assert got["ignored"] == 2.5 and got["negatives"] == 2.5 and got["unmatched_gt"] == 0.0


def test_negative_mask_from_a_sampler():
    """A sampler's ``negative`` (drawn among non-positive, non-ignored priors): image 0 uses priors 1, 2,
    image 1 uses prior 4 -> negatives 3 / 2 = 1.5, not the 12 - 2 - 0 = 10 / 2 = 5 of "all the rest"."""
    a = pairs((0, 0, 0), (1, 5, 1))
    a.negative = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    assert float(assignment_stats(a, targets(2), small_priors(), 2)["negatives"]) == 1.5
    a.negative = None
    assert float(assignment_stats(a, targets(2), small_priors(), 2)["negatives"]) == 5.0


def test_negative_mask_overlapping_positives_and_ignore_counts_only_used_negatives():
    """``negative`` also marking a positive (0, 0) and an ignored prior (0, 3): the criterion keeps neither as a
    negative, so only (0, 1) counts: negatives 1 / 1, ignored 1."""
    a = pairs((0, 0, 0))
    a.negative = torch.tensor([[1, 1, 0, 1, 0, 0]], dtype=torch.bool)
    a.ignore = torch.tensor([[0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    got = floats(assignment_stats(a, targets(1), small_priors(), 1))
    assert got["negatives"] == 1.0 and got["ignored"] == 1.0


def test_coco128_batch_matches_a_loop_reference(coco128_batch):
    """Real coco128 boxes at 640 through YOLOv5's assigner at anchor_t = 2 (3 levels, P = 25200; the stricter
    ratio leaves some boxes unmatched): every statistic against a plain Python count over the pair list."""
    t, batch_size, size = coco128_batch
    priors = AnchorPriorGenerator([P3, P4, P5], [8, 16, 32])([(size // s, size // s) for s in (8, 16, 32)])
    a = YOLOv5Assigner(anchor_t=2.0)(priors, t, batch_size)
    got = floats(assignment_stats(a, t, priors, batch_size))

    m, n = a.num_pos, t.shape[0]
    levels = priors.level[a.prior_index].tolist()
    matched = set(a.gt_index.tolist())
    positive = set(zip(a.batch_index.tolist(), a.prior_index.tolist()))
    expected = {"num_pos": m / batch_size, "pos_per_gt": m / n,
                "unmatched_gt": sum(i not in matched for i in range(n)) / n,
                **{f"pos_level_{lvl}": levels.count(lvl) / m for lvl in range(3)}, "ignored": 0.0,
                "negatives": (batch_size * len(priors) - len(positive)) / batch_size}
    assert got == pytest.approx(expected)
    assert 0 < got["unmatched_gt"] < 0.2 and all(got[f"pos_level_{lvl}"] > 0.1 for lvl in range(3))
    assert sum(got[f"pos_level_{lvl}"] for lvl in range(3)) == pytest.approx(1.0)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        assignment_stats(Assignment.empty(), targets(0), small_priors(), batch_size=0)


def test_format_assignment_table():
    """Title line, then one line per statistic in the given order; shares as percentages, counts with two
    decimals, values right-aligned in one column; tensors and floats alike."""
    stats = assignment_stats(pairs((0, 1, 0), (0, 4, 0), (1, 1, 2), (1, 1, 2)), targets(3), small_priors(), 2)
    text = format_assignment_table(stats, "yolov5 on 2 images")
    lines = text.splitlines()
    assert lines[0] == "yolov5 on 2 images"
    assert len(lines) == 1 + len(stats)
    assert [line.split()[0] for line in lines[1:]] == list(stats)
    row = {line.split()[0]: line for line in lines[1:]}
    assert row["num_pos"].split()[1] == "2.00" and "positive pairs per image" in row["num_pos"]
    assert row["pos_per_gt"].split()[1] == "1.33"
    assert row["unmatched_gt"].split()[1] == "33.3%"
    assert row["pos_level_0"].split()[1] == "75.0%" and "level 0" in row["pos_level_0"]
    assert row["pos_level_1"].split()[1] == "25.0%"
    ends = {line.index(line.split()[1]) + len(line.split()[1]) for line in lines[1:]}
    assert len(ends) == 1  # one right-aligned value column
    assert format_assignment_table(floats(stats), "yolov5 on 2 images") == text
    assert format_assignment_table({}, "empty") == "empty"
