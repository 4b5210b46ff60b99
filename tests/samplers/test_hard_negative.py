"""Tests of detector/samplers/hard_negative.py (SSD's hard-negative mining).

The independent reference is :func:`reference_negatives`, a plain Python reading of SSD's rule (per image, sort
the non-positive, non-ignored priors by decreasing loss, ties by increasing prior index, keep the first
``max(int(ratio * num_pos), min_negatives)``), and torchvision's own ``SSD.compute_loss``, whose classification
loss sums the losses of the negatives it mines: equal sums mean the same negatives up to ties of equal loss.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD

from detector.models.priors import AnchorPriorGenerator
from detector.ops.boxes import box_iou, cxcywh_to_xyxy
from detector.samplers import HardNegativeSampler, hard_negative_mining
from detector.structures import Assignment




def pairs_assignment(batch_index, prior_index, ignore=None, negative=None) -> Assignment:
    batch_index = torch.as_tensor(batch_index, dtype=torch.long)
    prior_index = torch.as_tensor(prior_index, dtype=torch.long)
    return Assignment(batch_index=batch_index, prior_index=prior_index, gt_index=torch.arange(batch_index.numel()),
                      ignore=ignore, negative=negative)


def reference_negatives(loss, positive, ignore, ratio, min_negatives=0) -> torch.Tensor:
    """SSD's rule, image by image in plain Python: Tensor[B, P] bool."""
    out = torch.zeros(loss.shape, dtype=torch.bool)
    for b, (row, pos, ign) in enumerate(zip(loss.tolist(), positive.tolist(), ignore.tolist())):
        candidates = sorted((p for p in range(len(row)) if not pos[p] and not ign[p]), key=lambda p: (-row[p], p))
        k = max(int(ratio * sum(pos)), min_negatives)
        for p in candidates[:k]:
            out[b, p] = True
    return out


def torchvision_ssd_classification_loss(cls_logits, matched_idxs, gt_boxes, gt_labels, anchors) -> torch.Tensor:
    """torchvision's ``SSD.compute_loss`` (neg_to_pos_ratio 3, class 0 = background) on the given matches."""
    stub = SimpleNamespace(neg_to_pos_ratio=3.0, box_coder=det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)))
    targets = [{"boxes": b, "labels": l} for b, l in zip(gt_boxes, gt_labels)]
    head_outputs = {"cls_logits": cls_logits, "bbox_regression": torch.zeros(*cls_logits.shape[:2], 4)}
    losses = SSD.compute_loss(stub, targets, head_outputs, [anchors] * len(gt_boxes), list(matched_idxs))
    return losses["classification"]


def test_docstring_worked_example():
    """Image 0 (the docstring's): positive prior 1 (two pairs), ignored prior 6, losses
    [0.9, 5.0, 0.1, 0.7, 0.3, 0.8, 2.0, 0.5]; k = int(3 * 1) = 3; candidates by decreasing loss 0 (0.9),
    5 (0.8), 3 (0.7) -> negatives {0, 3, 5}: neither the positive (5.0) nor the ignored prior (2.0), though
    their losses are the highest.
    Image 1: no positives -> k = 0, no negatives (SSD); with min_negatives = 2: its two hardest priors,
    4 (0.95) and 2 (0.6); image 0 keeps max(3, 2) = 3.
    """
    loss = torch.tensor([[0.9, 5.0, 0.1, 0.7, 0.3, 0.8, 2.0, 0.5],
                         [0.1, 0.2, 0.6, 0.3, 0.95, 0.0, 0.4, 0.5]])
    ignore = torch.zeros(2, 8, dtype=torch.bool)
    ignore[0, 6] = True
    assignment = pairs_assignment([0, 0], [1, 1], ignore=ignore)
    result = HardNegativeSampler()(assignment, 2, 8, prior_loss=loss)
    assert result.negative[0].nonzero()[:, 0].tolist() == [0, 3, 5]
    assert result.negative[1].sum() == 0
    assert result.num_pos == 2 and result.ignore is ignore and assignment.negative is None

    result = HardNegativeSampler(min_negatives=2)(assignment, 2, 8, prior_loss=loss)
    assert result.negative[0].nonzero()[:, 0].tolist() == [0, 3, 5]
    assert result.negative[1].nonzero()[:, 0].tolist() == [2, 4]


def test_ties_lower_prior_index_first():
    """Losses [1, 2, 2, 2, 1, 2] with positive prior 0 (k = 3): four candidates tie at 2 (priors 1, 2, 3, 5);
    the three with the lowest index win: {1, 2, 3}. With ratio 4 the tie set {1, 2, 3, 5} is taken whole."""
    loss = torch.tensor([[1.0, 2.0, 2.0, 2.0, 1.0, 2.0]])
    assignment = pairs_assignment([0], [0])
    assert hard_negative_mining(assignment, loss).negative[0].nonzero()[:, 0].tolist() == [1, 2, 3]
    assert hard_negative_mining(assignment, loss, neg_pos_ratio=4).negative[0].nonzero()[:, 0].tolist() == [1, 2, 3, 5]


@pytest.mark.parametrize("ratio, min_negatives", [(3.0, 0), (3.0, 20), (2.5, 0), (0.0, 5), (1.0, 0)])
def test_random_losses_with_ties_match_reference(ratio, min_negatives):
    """B = 6, P = 400, losses drawn from 8 values (so most losses tie), positives 0-60 per image (a prior may be in
    two pairs), an ignore band per image, and one image with more mined negatives than candidates (then all
    candidates). ``int(2.5 * n)`` floors (torchvision's rank test would round up)."""
    g = torch.Generator().manual_seed(0)
    batch, num_priors = 6, 400
    loss = torch.randint(0, 8, (batch, num_priors), generator=g).float() / 4  # (B, P), many ties
    positive = torch.zeros(batch, num_priors, dtype=torch.bool)
    ignore = torch.zeros(batch, num_priors, dtype=torch.bool)
    for b, (num_pos, num_ign) in enumerate([(10, 30), (0, 0), (60, 100), (1, 399 - 1), (33, 0), (90, 200)]):
        perm = torch.randperm(num_priors, generator=g)
        positive[b, perm[:num_pos]] = True
        ignore[b, perm[num_pos : num_pos + num_ign]] = True
    b, p = positive.nonzero(as_tuple=True)
    double = torch.arange(b.numel()) % 3 == 0  # every third positive prior is in two pairs
    assignment = pairs_assignment(torch.cat((b, b[double])), torch.cat((p, p[double])), ignore=ignore)

    result = HardNegativeSampler(ratio, min_negatives)(assignment, batch, num_priors, prior_loss=loss)
    expected = reference_negatives(loss, positive, ignore, ratio, min_negatives)
    assert torch.equal(result.negative, expected)
    candidates = (~positive & ~ignore).sum(1)
    wanted = [max(int(ratio * n), min_negatives) for n in positive.sum(1).tolist()]
    assert result.negative.sum(1).tolist() == [min(w, int(c)) for w, c in zip(wanted, candidates)]
    assert not (result.negative & (positive | ignore)).any()


def test_equals_torchvision_ssd_on_coco128(coco128_targets):
    """A real case: 6 coco128 images letterboxed to 320 plus one empty image, 1575 SSD-style anchors (strides
    16 / 32 / 64, 3 anchors per cell), matched by torchvision's SSDMatcher (IoU 0.5, plus each box's best anchor),
    random logits over 80 classes + background (class 0 here, torchvision's layout).

    The negatives mined from each prior's background cross-entropy equal the Python reference, and the
    classification loss rebuilt from them, ``(sum CE of positives + sum CE of negatives) / #positives``, equals
    the one torchvision's ``SSD.compute_loss`` returns. The empty image gets no negatives in both.
    Run twice: with continuous logits (no ties) and with logits rounded to whole numbers over 3 classes
    (many equal losses: the chosen priors may then differ from torchvision's unstable sort, the sum may not).
    """
    img_size, batch = 320, 7
    targets = coco128_targets(6, 640)
    targets[:, 2:] /= 2  # 640 -> 320 letterbox
    ssd_anchors = [[24, 24, 34, 17, 17, 34], [64, 64, 90, 45, 45, 90], [150, 150, 212, 106, 106, 212]]
    generator = AnchorPriorGenerator(ssd_anchors, [16, 32, 64])
    priors = generator([(20, 20), (10, 10), (5, 5)])
    anchors = cxcywh_to_xyxy(torch.cat((priors.centers, priors.anchors), dim=1))  # (P, 4) xyxy
    num_priors = len(priors)
    matcher = det_utils.SSDMatcher(0.5)
    matched, gt_boxes, batch_index, prior_index, gt_index = [], [], [], [], []
    for b in range(batch):  # building the test case per image is fine; the sampler is not looped
        rows = (targets[:, 0] == b).nonzero()[:, 0]
        boxes = targets[rows, 2:]
        m = matcher(box_iou(boxes, anchors)) if rows.numel() else torch.full((num_priors,), -1, dtype=torch.long)
        matched.append(m)
        gt_boxes.append(boxes)
        p = (m >= 0).nonzero()[:, 0]
        batch_index.append(torch.full_like(p, b))
        prior_index.append(p)
        gt_index.append(rows[m[p]])
    assignment = Assignment(batch_index=torch.cat(batch_index), prior_index=torch.cat(prior_index),
                            gt_index=torch.cat(gt_index))
    positive = assignment.positive_mask(batch, num_priors)
    num_pos = positive.sum(1)
    assert num_pos[-1] == 0 and (num_pos[:-1] > 0).all()
    assert (4 * num_pos <= num_priors).all()  # torchvision's corner (too few non-positives) does not arise

    for num_classes, rounded in [(80, False), (3, True)]:
        g = torch.Generator().manual_seed(num_classes)
        logits = torch.randn(batch, num_priors, num_classes + 1, generator=g) * 2  # (B, P, C + 1), class 0 = bg
        if rounded:
            logits = logits.round()
        labels = [(targets[targets[:, 0] == b, 1].long() % num_classes) + 1 for b in range(batch)]
        cls_target = torch.zeros(batch, num_priors, dtype=torch.long)
        cls_target[assignment.batch_index, assignment.prior_index] = torch.cat(
            [lab[m[m >= 0]] for lab, m in zip(labels, matched)])
        ce = F.cross_entropy(logits.flatten(0, 1), cls_target.flatten(), reduction="none").view(batch, num_priors)
        bg_loss = F.cross_entropy(logits.flatten(0, 1), torch.zeros(batch * num_priors, dtype=torch.long),
                                  reduction="none").view(batch, num_priors)  # (B, P) prior_loss
        if rounded:
            assert bg_loss.unique().numel() < bg_loss.numel() // 10  # ties everywhere

        result = HardNegativeSampler()(assignment, batch, num_priors, prior_loss=bg_loss)
        assert torch.equal(result.negative, reference_negatives(bg_loss, positive, torch.zeros_like(positive), 3.0))
        assert result.negative.sum(1).tolist() == (3 * num_pos).tolist()
        ours = (ce[positive].sum() + ce[result.negative].sum()) / num_pos.sum()
        theirs = torchvision_ssd_classification_loss(logits, matched, gt_boxes, labels, anchors)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_fewer_candidates_than_wanted_and_assigner_negatives():
    """P = 6, positives {0, 1} -> k = 6 but only 4 candidates {2, 3, 4, 5}: all 4, never a positive (torchvision
    would add the positives, whose loss it sets to -inf). When the assigner narrowed ``negative`` to {2, 5}, only
    those remain."""
    loss = torch.tensor([[9.0, 8.0, 1.0, 2.0, 3.0, 4.0]])
    assignment = pairs_assignment([0, 0], [0, 1])
    assert hard_negative_mining(assignment, loss).negative[0].nonzero()[:, 0].tolist() == [2, 3, 4, 5]
    allowed = torch.tensor([[False, False, True, False, False, True]])
    narrowed = pairs_assignment([0, 0], [0, 1], negative=allowed)
    assert hard_negative_mining(narrowed, loss).negative[0].nonzero()[:, 0].tolist() == [2, 5]


def test_ignored_hardest_prior_is_skipped():
    """Positive prior 0, ratio 2 -> k = 2. Losses [0, 5, 4, 3, 1]; without ignore {1, 2}; ignoring prior 1 (the
    hardest) gives {2, 3}; ignoring everything but the positive gives none."""
    loss = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0]])
    no_ignore = pairs_assignment([0], [0])
    assert hard_negative_mining(no_ignore, loss, 2.0).negative[0].nonzero()[:, 0].tolist() == [1, 2]
    ignore = torch.tensor([[False, True, False, False, False]])
    result = hard_negative_mining(pairs_assignment([0], [0], ignore=ignore), loss, 2.0)
    assert result.negative[0].nonzero()[:, 0].tolist() == [2, 3]
    all_ignored = pairs_assignment([0], [0], ignore=torch.tensor([[False, True, True, True, True]]))
    assert hard_negative_mining(all_ignored, loss, 2.0, min_negatives=3).negative.sum() == 0


def test_empty_assignment_and_detached_loss():
    """No pairs at all: no negatives unless min_negatives (then the hardest ones). A loss that requires grad is
    read without building a graph."""
    loss = torch.tensor([[0.3, 0.1, 0.2], [0.5, 0.7, 0.6]], requires_grad=True)
    empty = Assignment.empty()
    assert HardNegativeSampler()(empty, 2, 3, prior_loss=loss).negative.sum() == 0
    result = HardNegativeSampler(min_negatives=1)(empty, 2, 3, prior_loss=loss * 2)
    assert result.negative.tolist() == [[True, False, False], [False, True, False]]
    assert not result.negative.requires_grad and result.num_pos == 0


def test_interface_and_errors():
    sampler = HardNegativeSampler(neg_pos_ratio=2.0, min_negatives=4)
    assert sampler.needs_losses is True
    assert repr(sampler) == "HardNegativeSampler(neg_pos_ratio=2.0, min_negatives=4)"
    assignment = pairs_assignment([0], [0])
    with pytest.raises(ValueError, match=r"needs prior_loss, Tensor\[B, P\] = \(1, 5\)"):
        sampler(assignment, 1, 5)
    with pytest.raises(ValueError, match="needs prior_loss"):
        sampler(assignment, 1, 5, prior_loss=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="neg_pos_ratio must be >= 0"):
        HardNegativeSampler(neg_pos_ratio=-1)
    with pytest.raises(ValueError, match="min_negatives must be an integer >= 0"):
        HardNegativeSampler(min_negatives=1.5)
    with pytest.raises(ValueError, match=r"assignment.ignore must be Tensor\[B, P\]"):
        sampler(pairs_assignment([0], [0], ignore=torch.zeros(1, 3, dtype=torch.bool)), 1, 5,
                prior_loss=torch.zeros(1, 5))
