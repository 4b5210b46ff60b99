"""Tests of detector/samplers/random.py (Faster R-CNN's balanced random sampling).

Per-prior labels used to build test cases, as torchvision's ``BalancedPositiveNegativeSampler`` reads them:
``-1`` ignored, ``0`` negative, ``k >= 1`` positive prior in ``k`` pairs (so a prior may be in several pairs).
"""
from __future__ import annotations

from itertools import combinations

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from detector.assigners import YOLOv5Assigner
from detector.models.priors import AnchorPriorGenerator
from detector.samplers import RandomSampler, balanced_random_sampling
from detector.samplers.random import top_k_per_row
from detector.structures import Assignment

YOLOV5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]




def assignment_from_labels(labels: torch.Tensor, **fields) -> Assignment:
    """labels (Tensor[B, P] long: -1 ignored, 0 negative, k >= 1 positive in k pairs) -> Assignment.

    Pairs are ordered by image, then prior, then copy; ``gt_index`` numbers the pairs 0..M-1 so a test can tell
    which pairs survived.
    """
    b, p = (labels > 0).nonzero(as_tuple=True)  # (K,), (K,)
    copies = labels[b, p]  # (K,)
    batch_index = b.repeat_interleave(copies)  # (M,)
    prior_index = p.repeat_interleave(copies)  # (M,)
    gt_index = torch.arange(batch_index.numel())
    ignore = labels < 0
    return Assignment(batch_index=batch_index, prior_index=prior_index, gt_index=gt_index, ignore=ignore, **fields)


def torchvision_counts(labels: torch.Tensor, num: int, pos_fraction: float) -> tuple[list[int], list[int]]:
    """Positives and negatives per image chosen by torchvision's sampler on the same per-prior labels."""
    pos_masks, neg_masks = BalancedPositiveNegativeSampler(num, pos_fraction)(list(labels))
    return [int(m.sum()) for m in pos_masks], [int(m.sum()) for m in neg_masks]


def kept_prior_mask(result: Assignment, batch_size: int, num_priors: int) -> torch.Tensor:
    return result.positive_mask(batch_size, num_priors)


def check_structure(original: Assignment, result: Assignment, batch_size: int, num_priors: int) -> None:
    """Invariants every sampled assignment must satisfy."""
    pos_before = original.positive_mask(batch_size, num_priors)
    pos_after = result.positive_mask(batch_size, num_priors)
    ignore = original.ignore if original.ignore is not None else torch.zeros_like(pos_before)
    assert result.negative.dtype == torch.bool and result.negative.shape == (batch_size, num_priors)
    assert not (result.negative & pos_before).any(), "a positive prior (kept or dropped) became a negative"
    assert not (result.negative & ignore).any(), "an ignored prior became a negative"
    assert not (pos_after & ~pos_before).any()
    # every pair of a kept prior survives, no pair of a dropped prior does
    keep_pair = pos_after[original.batch_index, original.prior_index]
    assert torch.equal(result.gt_index, original.gt_index[keep_pair])
    assert torch.equal(result.batch_index, original.batch_index[keep_pair])
    assert torch.equal(result.prior_index, original.prior_index[keep_pair])
    assert result.ignore is original.ignore


def make_labels(configs, num_priors, seed=0) -> torch.Tensor:
    """One image per config ``(num_positive_priors, num_ignored)``, at random places; positives get 1-3 pairs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(len(configs), num_priors, dtype=torch.long)
    for b, (num_pos, num_ign) in enumerate(configs):
        perm = torch.randperm(num_priors, generator=g)
        labels[b, perm[:num_pos]] = torch.randint(1, 4, (num_pos,), generator=g)
        labels[b, perm[num_pos : num_pos + num_ign]] = -1
    return labels


# (positive priors, ignored priors) per image, P = 1000:
CONFIGS = [
    (300, 100),  # more positives than num * pos_fraction, an ignore band
    (50, 0),  # fewer positives: negatives fill up to num
    (0, 0),  # no positives: num negatives
    (60, 900),  # only 40 negatives, fewer than needed: all of them
    (128, 200),  # exactly num * pos_fraction positives with the defaults
    (5, 995),  # no negatives at all
    (0, 1000),  # everything ignored
]


@pytest.mark.parametrize("num, pos_fraction", [(256, 0.5), (512, 0.25), (64, 1.0), (100, 0.0), (10, 0.33)])
def test_counts_follow_torchvision_balanced_sampler(num, pos_fraction):
    """Per image, kept positive priors = min(#pos, int(num * pos_fraction)) and negatives =
    min(#neg, num - kept), exactly the counts torchvision's sampler draws on the same labels. For the defaults
    (256, 0.5): image 0 -> 128 + 128, image 1 -> 50 + 206, image 2 -> 0 + 256, image 3 -> 60 + 40, image 4 ->
    128 + 128, image 5 -> 5 + 0, image 6 -> 0 + 0."""
    labels = make_labels(CONFIGS, 1000)
    assignment = assignment_from_labels(labels)
    torch.manual_seed(0)
    result = RandomSampler(num, pos_fraction)(assignment, len(CONFIGS), 1000)
    tv_pos, tv_neg = torchvision_counts(labels, num, pos_fraction)
    assert kept_prior_mask(result, len(CONFIGS), 1000).sum(1).tolist() == tv_pos
    assert result.negative.sum(1).tolist() == tv_neg
    check_structure(assignment, result, len(CONFIGS), 1000)
    if (num, pos_fraction) == (256, 0.5):
        assert tv_pos == [128, 50, 0, 60, 128, 5, 0] and tv_neg == [128, 206, 256, 40, 128, 0, 0]


def test_real_priors_and_coco128_assignment_counts(coco128_targets):
    """YOLOv5's assignment of 16 real coco128 images on the 25200 anchor priors of a 640 input; per-prior
    labels for torchvision are ``1`` on positive priors, ``0`` elsewhere (no ignore). These images have 6 to 127
    positive priors, so ``num = 128`` (at most 64 positives) sees images on both sides of the cap."""
    targets = coco128_targets(16, 640)
    priors = AnchorPriorGenerator(YOLOV5_ANCHORS, [8, 16, 32])([(80, 80), (40, 40), (20, 20)])
    assignment = YOLOv5Assigner()(priors, targets, 16)
    num_priors = len(priors)
    positive = assignment.positive_mask(16, num_priors)
    assert positive.sum(1).max() > 64 and (positive.sum(1) < 64).any()  # both regimes occur
    assert assignment.num_pos > int(positive.sum())  # YOLOv5 keeps duplicate pairs
    torch.manual_seed(3)
    result = RandomSampler(num=128)(assignment, 16, num_priors)
    tv_pos, tv_neg = torchvision_counts(positive.long(), 128, 0.5)
    assert result.positive_mask(16, num_priors).sum(1).tolist() == tv_pos
    assert result.negative.sum(1).tolist() == tv_neg
    check_structure(assignment, result, 16, num_priors)


def test_selection_is_uniform():
    """The docstring example, drawn for 6000 images at once (3 calls of 2000, fixed seed, so deterministic).

    P = 8, num = 4, pos_fraction = 0.5: positives {0, 1, 2} (prior 1 in two pairs), ignored {3},
    candidates {4, 5, 6, 7}. 2 of the 3 positive priors are kept: each of the 3 subsets with probability 1/3;
    2 negatives: each of the 6 pairs of candidates with probability 1/6. Pearson's chi-square statistics must
    stay below the 0.001 quantiles (df = 2: 13.82; df = 5: 20.52); a sampler that favours low indices (always
    {0, 1} and {4, 5}) scores 12000 and 30000.
    """
    labels = torch.tensor([[1, 2, 1, -1, 0, 0, 0, 0]]).expand(2000, 8)
    assignment = assignment_from_labels(labels)
    sampler = RandomSampler(num=4, pos_fraction=0.5)
    generator = torch.Generator().manual_seed(1234)
    pos_subsets, neg_subsets = [], []
    for _ in range(3):
        result = sampler(assignment, 2000, 8, generator=generator)
        check_structure(assignment, result, 2000, 8)
        pos = result.positive_mask(2000, 8)
        assert (pos.sum(1) == 2).all() and (result.negative.sum(1) == 2).all()
        pos_subsets += [tuple(row.nonzero()[:, 0].tolist()) for row in pos]
        neg_subsets += [tuple(row.nonzero()[:, 0].tolist()) for row in result.negative]

    def chi_square(draws, categories):
        expected = len(draws) / len(categories)
        assert set(draws) <= set(categories)
        return sum((draws.count(c) - expected) ** 2 / expected for c in categories)

    assert chi_square(pos_subsets, list(combinations([0, 1, 2], 2))) < 13.82
    assert chi_square(neg_subsets, list(combinations([4, 5, 6, 7], 2))) < 20.52
    # the check has teeth: a biased draw fails it
    assert chi_square([(0, 1)] * 6000, list(combinations([0, 1, 2], 2))) > 13.82


def test_determinism_generator_and_global_rng():
    """Same seed -> same draw (seeded generator, or torch's global RNG as the trainer seeds it); another seed ->
    another draw; a given generator leaves the global RNG untouched."""
    labels = make_labels([(200, 50), (30, 0), (0, 10)], 600, seed=5)
    assignment = assignment_from_labels(labels)
    sampler = RandomSampler()

    def draw(**kwargs):
        r = sampler(assignment, 3, 600, **kwargs)
        return r.gt_index, r.negative

    a = draw(generator=torch.Generator().manual_seed(7))
    b = draw(generator=torch.Generator().manual_seed(7))
    c = draw(generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])

    state = torch.get_rng_state()
    draw(generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)

    torch.manual_seed(11)
    d, e = draw(), draw()
    torch.manual_seed(11)
    f = draw()
    assert torch.equal(d[0], f[0]) and torch.equal(d[1], f[1])
    assert not torch.equal(d[1], e[1])  # consecutive calls draw afresh


def test_dropped_prior_drops_all_its_pairs_and_per_pair_fields():
    """Every positive prior is in 3 pairs; with num = 4, pos_fraction = 0.5 only 2 of the 6 positive priors of the
    image are kept, so exactly 6 of the 18 pairs survive, in their input order, and weight / score / per-pair
    extras (leading dimension M = 18) follow them; an extras tensor of another shape is passed through."""
    labels = torch.tensor([[3, 0, 3, 3, 0, -1, 3, 0, 3, 3, 0, 0]])
    base = assignment_from_labels(labels)
    m = base.num_pos
    assert m == 18
    weight = torch.arange(m, dtype=torch.float32) / 10
    score = torch.arange(m, dtype=torch.float32) / 100
    assignment = assignment_from_labels(
        labels, weight=weight, score=score,
        extras={"centerness": torch.arange(m) * 2.0, "per_image": torch.ones(1, 5)},
    )
    for seed in range(20):
        result = RandomSampler(4, 0.5)(assignment, 1, 12, generator=torch.Generator().manual_seed(seed))
        check_structure(assignment, result, 1, 12)
        assert result.num_pos == 6
        kept_priors = result.prior_index.unique()
        assert kept_priors.numel() == 2
        assert all(int((result.prior_index == p).sum()) == 3 for p in kept_priors)
        pairs = result.gt_index  # gt_index numbers the input pairs
        assert (pairs.diff() > 0).all()  # input order kept
        assert torch.equal(result.weight, weight[pairs]) and torch.equal(result.score, score[pairs])
        assert torch.equal(result.extras["centerness"], pairs * 2.0)
        assert torch.equal(result.extras["per_image"], torch.ones(1, 5))
        assert int(result.negative.sum()) == 2  # num - 2 kept, from the 5 candidates
    assert assignment.negative is None and assignment.num_pos == 18  # the input is not modified


def test_empty_assignment_and_assigner_negatives():
    """No pairs: num negatives per image among the candidates. When the assigner already narrowed ``negative``,
    the draw stays inside it (image 0: 300 allowed, 256 drawn; image 1: 10 allowed, all 10 drawn)."""
    empty = Assignment.empty()
    result = RandomSampler()(empty, 2, 300)
    assert result.num_pos == 0 and result.negative.sum(1).tolist() == [256, 256]

    allowed = torch.zeros(2, 400, dtype=torch.bool)
    allowed[0, :300] = True
    allowed[1, 100:110] = True
    narrowed = Assignment(batch_index=torch.zeros(0, dtype=torch.long), prior_index=torch.zeros(0, dtype=torch.long),
                          gt_index=torch.zeros(0, dtype=torch.long), negative=allowed)
    result = RandomSampler()(narrowed, 2, 400)
    assert result.negative.sum(1).tolist() == [256, 10]
    assert not (result.negative & ~allowed).any()

    # all priors ignored: nothing to draw
    ignored = Assignment(batch_index=torch.zeros(0, dtype=torch.long), prior_index=torch.zeros(0, dtype=torch.long),
                         gt_index=torch.zeros(0, dtype=torch.long), ignore=torch.ones(1, 50, dtype=torch.bool))
    assert int(RandomSampler()(ignored, 1, 50).negative.sum()) == 0


def test_function_matches_class_interface_and_errors():
    labels = make_labels([(40, 10)], 200)
    assignment = assignment_from_labels(labels)
    sampler = RandomSampler(num=32, pos_fraction=0.25)
    assert sampler.needs_losses is False
    assert repr(sampler) == "RandomSampler(num=32, pos_fraction=0.25)"
    a = sampler(assignment, 1, 200, prior_loss=torch.rand(1, 200), generator=torch.Generator().manual_seed(2))
    b = balanced_random_sampling(assignment, 1, 200, num=32, pos_fraction=0.25,
                                 generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.gt_index, b.gt_index) and torch.equal(a.negative, b.negative)
    assert a.positive_mask(1, 200).sum() == 8 and a.negative.sum() == 24

    with pytest.raises(ValueError, match="num must be an integer >= 1"):
        RandomSampler(num=0)
    with pytest.raises(ValueError, match=r"pos_fraction must be in \[0, 1\]"):
        RandomSampler(pos_fraction=1.5)
    with pytest.raises(ValueError, match=r"assignment.ignore must be Tensor\[B, P\]"):
        sampler(assignment, 2, 200)


def test_top_k_per_row_docstring_and_ties():
    """The helper both samplers use. Row 0 (its docstring): scores [3, 5, 5, 1, 5], entry 1 masked out, k = 2:
    entries 2 and 4 (score 5; entry 1 is not eligible). Row 1: k = 1 picks the lower index of the tie at 5.
    Row 2: k = 10 > 4 eligible entries: all of them. Row 3: k = 0: none."""
    score = torch.tensor([[3.0, 5.0, 5.0, 1.0, 5.0]]).expand(4, 5)
    mask = torch.tensor([[True, False, True, True, True]]).expand(4, 5)
    chosen = top_k_per_row(score, mask, torch.tensor([2, 1, 10, 0]))
    assert chosen.tolist() == [
        [False, False, True, False, True],
        [False, False, True, False, False],
        [True, False, True, True, True],
        [False, False, False, False, False],
    ]
    # integer scores, including the dtype's lowest value on an eligible entry
    low = torch.iinfo(torch.long).min
    ints = torch.tensor([[low, 7, low, 2]])
    assert top_k_per_row(ints, torch.tensor([[True, False, True, True]]), torch.tensor([2])).tolist() == [
        [True, False, False, True]
    ]
