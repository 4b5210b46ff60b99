"""Tests for detector/losses/classification.py (per-element classification / objectness losses)."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detector.losses.heatmap import penalty_reduced_focal_loss
from detector.losses.classification import (
    CLS,
    balanced_bce_loss,
    bce_loss,
    ce_loss,
    focal_loss,
    mse_loss,
    poly1_focal_loss,
    poly1_loss,
)
from detector.losses.ranking import ap_loss, dr_loss
from detector.losses.soft_targets import quality_focal_loss, varifocal_loss
from detector.losses.spec import loss_signature
from detector.losses.stateful import GHMCLoss

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def _random(shape, seed=0, soft=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    target = torch.rand(shape, generator=g) if soft else (torch.rand(shape, generator=g) < 0.3).float()
    return logits, target


# ---------------------------------------------------------------------------------------------- bce
def test_bce_hand_values():
    """sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4.

    logit 0, target 1:     -ln(1/2) = ln 2;  with pos_weight 2: 2 ln 2.
    logit ln 3, target 0:  -ln(1 - 3/4) = ln 4 (pos_weight does not touch negatives).
    """
    logits, target = torch.tensor([0.0, LN3]), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(bce_loss(logits, target), torch.tensor([LN2, LN4]))
    torch.testing.assert_close(bce_loss(logits, target, pos_weight=2.0), torch.tensor([2 * LN2, LN4]))


def test_bce_matches_torch_module_with_pos_weight():
    logits, target = _random((64, 7), soft=True)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.7), reduction="none")(logits, target)
    torch.testing.assert_close(bce_loss(logits, target, pos_weight=1.7), ref)


def test_bce_label_smoothing_is_yolov5_smooth_bce():
    """YOLOv5 smooth_BCE(eps): positive target 1 - eps/2, negative eps/2.

    eps = 0.2, logit 0 (p = 1/2): BCE is ln 2 whatever the target.
    logit ln 3 (p = 3/4), one-hot target 1 -> 0.9: -(0.9 ln 0.75 + 0.1 ln 0.25);
                         one-hot target 0 -> 0.1: -(0.1 ln 0.75 + 0.9 ln 0.25).
    """
    logits = torch.tensor([0.0, LN3, LN3])
    target = torch.tensor([1.0, 1.0, 0.0])
    expected = torch.tensor([
        LN2,
        -(0.9 * math.log(0.75) + 0.1 * math.log(0.25)),
        -(0.1 * math.log(0.75) + 0.9 * math.log(0.25)),
    ])
    torch.testing.assert_close(bce_loss(logits, target, label_smoothing=0.2), expected)


# ----------------------------------------------------------------------------------------------- ce
def test_ce_matches_cross_entropy_for_one_hot_and_soft_targets():
    logits, _ = _random((32, 5))
    labels = torch.arange(32) % 5
    one_hot = F.one_hot(labels, 5).float()
    torch.testing.assert_close(ce_loss(logits, one_hot), F.cross_entropy(logits, labels, reduction="none"))
    torch.testing.assert_close(
        ce_loss(logits, one_hot, label_smoothing=0.1),
        F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1),
    )
    soft = torch.rand(32, 5).softmax(-1)
    torch.testing.assert_close(ce_loss(logits, soft), F.cross_entropy(logits, soft, reduction="none"))


def test_ce_hand_value_and_zero_row():
    """Two equal logits: softmax 1/2 each, CE = ln 2. A row with no class (all zero) costs nothing."""
    logits = torch.tensor([[0.0, 0.0], [5.0, -1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(ce_loss(logits, target), torch.tensor([LN2, 0.0]))


def test_ce_needs_a_class_dimension():
    with pytest.raises(ValueError, match="class dimension"):
        ce_loss(torch.zeros(4, 1), torch.ones(4, 1))


# ------------------------------------------------------------------------------------ balanced bce
def test_balanced_bce_hand_values():
    """alpha 0.75 (default): logit 0, target 1 -> 0.75 ln 2; target 0 -> 0.25 ln 2. alpha 0.5 halves BCE."""
    logits, target = torch.zeros(2), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(balanced_bce_loss(logits, target), torch.tensor([0.75 * LN2, 0.25 * LN2]))
    logits, target = _random((50,), soft=True)
    torch.testing.assert_close(balanced_bce_loss(logits, target, alpha=0.5), 0.5 * bce_loss(logits, target))


def test_balanced_bce_is_focal_with_gamma_zero():
    logits, target = _random((40, 3), seed=3)
    torch.testing.assert_close(
        balanced_bce_loss(logits, target, alpha=0.3), focal_loss(logits, target, alpha=0.3, gamma=0.0)
    )


# ------------------------------------------------------------------------------------------- focal
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.5), (-1.0, 2.0), (0.9, 0.0)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_matches_torchvision(soft, alpha, gamma, reduction):
    logits, target = _random((128, 6), seed=7, soft=soft)
    ours = focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction=reduction)
    ref = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_focal_default_hand_value():
    """alpha 0.25, gamma 2; logit 0 (p = 1/2), target 1: p_t = 1/2, loss = 0.25 * (1/2)^2 * ln 2."""
    torch.testing.assert_close(focal_loss(torch.zeros(1), torch.ones(1)), torch.tensor([0.25 * 0.25 * LN2]))


# --------------------------------------------------------------------------------------------- mse
def test_mse_hand_values_with_neg_weight():
    """logit 0 -> p = 1/2. target 1: (1/2)^2 = 0.25; target 0 with lambda_noobj 0.5: 0.5 * 0.25;
    soft target 0.3 (not a negative, weight 1): (0.5 - 0.3)^2 = 0.04."""
    loss = mse_loss(torch.zeros(3), torch.tensor([1.0, 0.0, 0.3]), neg_weight=0.5)
    torch.testing.assert_close(loss, torch.tensor([0.25, 0.125, 0.04]))


def test_poly1_hand_values():
    """PolyLoss (Leng et al. 2022), epsilon 1. Logit 0, target 1: p = p_t = 1/2, BCE = ln 2, so poly1 = ln 2 + 1/2.
    Focal (alpha 0.25, gamma 2) there: 0.25 * (1/2)^2 * ln 2 = ln(2) / 16; poly1_focal adds (1/2)^3 = 1/8.
    Logit ln 3, target 0: p = 3/4, p_t = 1/4, BCE = -ln(1/4) = ln 4; poly1 = ln 4 + 3/4; focal = 0.75 * (3/4)^2 ln 4,
    poly1_focal adds (3/4)^3."""
    logits = torch.tensor([0.0, LN3], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(poly1_loss(logits, target), torch.tensor([LN2 + 0.5, LN4 + 0.75], dtype=torch.float64))
    expected = torch.tensor([LN2 / 16 + 1 / 8, 0.75 * 0.5625 * LN4 + 0.421875], dtype=torch.float64)
    torch.testing.assert_close(poly1_focal_loss(logits, target), expected)
    torch.testing.assert_close(poly1_loss(logits, target, epsilon=0.0), bce_loss(logits, target))
    torch.testing.assert_close(poly1_focal_loss(logits, target, epsilon=0.0), focal_loss(logits, target))
    torch.testing.assert_close(poly1_loss(logits, target, epsilon=2.0) - poly1_loss(logits, target),
                               torch.tensor([0.5, 0.75], dtype=torch.float64))


# ---------------------------------------------------------------------------------- common checks
PER_ELEMENT = [bce_loss, ce_loss, balanced_bce_loss, focal_loss, mse_loss, poly1_loss, poly1_focal_loss]


@pytest.mark.parametrize("fn", PER_ELEMENT, ids=lambda f: f.__name__)
def test_reductions(fn):
    logits, target = _random((16, 4), seed=11, soft=True)
    target = target / target.sum(-1, keepdim=True)  # valid for ce too
    none = fn(logits, target, reduction="none")
    torch.testing.assert_close(fn(logits, target, reduction="mean"), none.mean())
    torch.testing.assert_close(fn(logits, target, reduction="sum"), none.sum())
    with pytest.raises(ValueError, match="reduction"):
        fn(logits, target, reduction="avg")


@pytest.mark.parametrize("fn", PER_ELEMENT, ids=lambda f: f.__name__)
def test_gradcheck(fn):
    logits, target = _random((6, 3), seed=5, soft=True)
    target = (target / target.sum(-1, keepdim=True)).double()
    logits = logits.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fn(x, target, reduction="sum"), (logits,))


def test_cls_table_names_and_interface():
    assert CLS == {
        "bce": bce_loss,
        "ce": ce_loss,
        "balanced_bce": balanced_bce_loss,
        "focal": focal_loss,
        "mse": mse_loss,
        "vfl": varifocal_loss,
        "qfl": quality_focal_loss,
        "poly1": poly1_loss,
        "poly1_focal": poly1_focal_loss,
        "ghm": GHMCLoss,
        "penalty_focal": penalty_reduced_focal_loss,
        "dr": dr_loss,
        "ap": ap_loss,
    }
    for name, fn in CLS.items():
        params = loss_signature(fn).parameters
        assert list(params)[:2] == ["logits", "target"], name
        assert params["reduction"].kind is inspect.Parameter.KEYWORD_ONLY, name
