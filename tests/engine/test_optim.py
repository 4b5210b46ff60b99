"""Tests for detector/engine/optim.py: parameter groups, nbs scaling and the YOLOv5 lr / momentum schedule."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detector.engine.optim import (
    BIAS_GROUP,
    NORM_GROUP,
    LRSchedule,
    WEIGHT_GROUP,
    accumulate_steps,
    apply_lr,
    build_optimizer,
    lr_factor,
    scaled_weight_decay,
    split_parameters,
    warmup_iterations,
    warmup_values,
)


def small_model() -> nn.Sequential:
    """conv(no bias) + BN + SiLU + conv(bias) + GroupNorm + flatten + Linear + LayerNorm.

    Parameters: conv1.w, bn.w, bn.b, conv2.w, conv2.b, gn.w, gn.b, fc.w, fc.b, ln.w, ln.b (11 tensors).
    Expected groups: weights {conv1.w, conv2.w, fc.w}; norm {bn.w, gn.w, ln.w}; bias {bn.b, conv2.b, gn.b, fc.b, ln.b}.
    """
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 0
        nn.BatchNorm2d(8),  # 1
        nn.SiLU(),  # 2
        nn.Conv2d(8, 4, 1, bias=True),  # 3
        nn.GroupNorm(2, 4),  # 4
        nn.Flatten(),  # 5
        nn.Linear(4 * 4 * 4, 5),  # 6
        nn.LayerNorm(5),  # 7
    )


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_split_parameters_groups_every_parameter_once():
    m = small_model()
    weights, norms, biases = split_parameters(m)
    assert ids(weights) == ids([m[0].weight, m[3].weight, m[6].weight])
    assert ids(norms) == ids([m[1].weight, m[4].weight, m[7].weight])
    assert ids(biases) == ids([m[1].bias, m[3].bias, m[4].bias, m[6].bias, m[7].bias])
    all_ids = [id(p) for group in (weights, norms, biases) for p in group]
    assert len(all_ids) == len(set(all_ids)) == len(list(m.parameters())) == 11


def test_split_parameters_tied_weight_listed_once_and_extra_parameter_decayed():
    """A weight shared by two Linear layers appears once; a free nn.Parameter (not 'bias') goes to group 0."""
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    m = nn.Sequential(a, b)
    m.scale = nn.Parameter(torch.ones(1))
    weights, norms, biases = split_parameters(m)
    assert ids(weights) == ids([a.weight, m.scale]) and len(weights) == 2
    assert norms == []
    assert ids(biases) == ids([a.bias, b.bias])
    build_optimizer(m, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)  # torch refuses duplicates across groups


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "SGD"])
def test_build_optimizer_groups_and_hyperparameters(name):
    m = small_model()
    opt = build_optimizer(m, name, lr=0.01, momentum=0.937, weight_decay=5e-4)
    groups = opt.param_groups
    assert [g["name"] for g in groups] == ["weight", "norm", "bias"]
    assert ids(groups[WEIGHT_GROUP]["params"]) == ids([m[0].weight, m[3].weight, m[6].weight])
    assert ids(groups[NORM_GROUP]["params"]) == ids([m[1].weight, m[4].weight, m[7].weight])
    assert len(groups[BIAS_GROUP]["params"]) == 5
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 0.0]
    assert all(g["lr"] == 0.01 and g["initial_lr"] == 0.01 for g in groups)
    if name.lower() == "sgd":
        assert isinstance(opt, torch.optim.SGD)
        assert all(g["momentum"] == 0.937 and g["nesterov"] for g in groups)
    else:
        assert type(opt) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
        assert all(g["betas"] == (0.937, 0.999) for g in groups)


def test_build_optimizer_decay_applies_only_to_group_0():
    """Plain SGD step with zero gradients, lr=1, momentum=0, wd=0.1: w <- w - lr*wd*w = 0.9*w for group 0 only."""
    m = small_model()
    opt = build_optimizer(m, "sgd", lr=1.0, momentum=0.0, weight_decay=0.1, nesterov=False)
    before = {id(p): p.detach().clone() for p in m.parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in opt.param_groups[WEIGHT_GROUP]["params"]:
        torch.testing.assert_close(p.detach(), 0.9 * before[id(p)])
    for group in (NORM_GROUP, BIAS_GROUP):
        for p in opt.param_groups[group]["params"]:
            torch.testing.assert_close(p.detach(), before[id(p)])


def test_build_optimizer_errors():
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        build_optimizer(small_model(), "rmsprop")
    with pytest.raises(ValueError, match="no parameters"):
        build_optimizer(nn.ReLU())


def test_accumulate_and_scaled_weight_decay():
    """nbs=64: bs 16 -> round(4)=4; bs 24 -> round(2.67)=3; bs 40 -> round(1.6)=2; bs 128 -> max(round(0.5)=0,1)=1.

    Decay: 5e-4 * 16 * 4 / 64 = 5e-4; 5e-4 * 24 * 3 / 64 = 5.625e-4; 5e-4 * 128 * 1 / 64 = 1e-3.
    Ties go to even as Python's round: nbs=5, bs=2 -> round(2.5) = 2.
    """
    assert [accumulate_steps(b) for b in (16, 24, 40, 128, 1)] == [4, 3, 2, 1, 64]
    assert accumulate_steps(2, nbs=5) == 2
    assert scaled_weight_decay(5e-4, 16, 4) == pytest.approx(5e-4)
    assert scaled_weight_decay(5e-4, 24, 3) == pytest.approx(5.625e-4)
    assert scaled_weight_decay(5e-4, 128, 1) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        accumulate_steps(0)


def test_warmup_iterations():
    """3 epochs * 50 batches = 150; 3 * 20 = 60 -> at least 100; 0.5 * 301 = 150.5 -> 150 (ties to even); 0 -> off."""
    assert warmup_iterations(3, 50) == 150
    assert warmup_iterations(3, 20) == 100
    assert warmup_iterations(0.5, 301) == 150
    assert warmup_iterations(0.0, 50) == 0


def test_lr_factor_linear_and_cosine():
    """epochs=10, lrf=0.1.

    linear: e=0 -> 1; e=2 -> 0.8*0.9+0.1 = 0.82; e=10 -> 0.1; e=2.5 -> 0.75*0.9+0.1 = 0.775.
    cosine: e=0 -> 1; e=5 -> (1-cos(pi/2))/2 = 0.5 -> 0.5*(-0.9)+1 = 0.55; e=10 -> (1-cos(pi))/2 = 1 -> 0.1;
            e=2.5 -> (1-cos(pi/4))/2 = (1-0.70710678)/2 = 0.14644661 -> 1 - 0.9*0.14644661 = 0.86819805.
    """
    assert lr_factor(0, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(2, 10, 0.1) == pytest.approx(0.82)
    assert lr_factor(10, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(2.5, 10, 0.1, "linear") == pytest.approx(0.775)
    assert lr_factor(0, 10, 0.1, "cosine") == pytest.approx(1.0)
    assert lr_factor(5, 10, 0.1, "cosine") == pytest.approx(0.55)
    assert lr_factor(10, 10, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_factor(2.5, 10, 0.1, "cosine") == pytest.approx(0.86819805)
    with pytest.raises(ValueError, match="linear, cosine"):
        lr_factor(1, 10, 0.1, "step")


def test_warmup_values_hand_computed():
    """lr0=0.01, warmup_iters=100, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937.

    iteration 50, lf=1: bias lr = 0.1 + 0.5*(0.01-0.1) = 0.055; other lr = 0.5*0.01 = 0.005;
                        momentum = 0.8 + 0.5*0.137 = 0.8685.
    iteration 0: bias lr 0.1, other 0.0, momentum 0.8. iteration 100 (end, inclusive): 0.01, 0.937.
    iteration 150 with lf=0.82: past warm-up -> (0.0082, 0.937) for every group.
    """
    args = dict(warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    lr, mom = warmup_values(50, 100, 0.01, 1.0, BIAS_GROUP, **args)
    assert (lr, mom) == (pytest.approx(0.055), pytest.approx(0.8685))
    for group in (WEIGHT_GROUP, NORM_GROUP):
        assert warmup_values(50, 100, 0.01, 1.0, group, **args) == (pytest.approx(0.005), pytest.approx(0.8685))
    assert warmup_values(0, 100, 0.01, 1.0, BIAS_GROUP, **args) == (pytest.approx(0.1), pytest.approx(0.8))
    assert warmup_values(0, 100, 0.01, 1.0, WEIGHT_GROUP, **args) == (0.0, pytest.approx(0.8))
    assert warmup_values(100, 100, 0.01, 1.0, BIAS_GROUP, **args) == (pytest.approx(0.01), pytest.approx(0.937))
    for group in (WEIGHT_GROUP, NORM_GROUP, BIAS_GROUP):
        assert warmup_values(150, 100, 0.01, 0.82, group, **args) == (pytest.approx(0.0082), 0.937)
    assert warmup_values(0, 0, 0.01, 1.0, BIAS_GROUP, **args) == (pytest.approx(0.01), 0.937)  # warm-up off


def test_apply_lr_sets_every_group():
    """SGD, lr0=0.01, epochs=10, lrf=0.1 linear, warmup_iters=200.

    iteration 150 in epoch 1: lf(1) = 0.9*0.9+0.1 = 0.91, target = 0.0091, fraction = 0.75;
        weight/norm lr = 0.75*0.0091 = 0.006825; bias lr = 0.1 + 0.75*(0.0091-0.1) = 0.031825;
        momentum = 0.8 + 0.75*0.137 = 0.90275.
    iteration 250 in epoch 2: lf(2) = 0.82 -> lr 0.0082 in every group, momentum 0.937.
    """
    opt = build_optimizer(small_model(), "sgd", lr=0.01, momentum=0.937, weight_decay=5e-4)
    sched = LRSchedule(epochs=10, lrf=0.1, schedule="linear", warmup_iters=200, warmup_bias_lr=0.1,
                       warmup_momentum=0.8, momentum=0.937)  # fmt: skip
    lrs = apply_lr(opt, 150, 1, sched)
    assert lrs == pytest.approx([0.006825, 0.006825, 0.031825])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.006825, 0.006825, 0.031825])
    assert [g["momentum"] for g in opt.param_groups] == pytest.approx([0.90275] * 3)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.01] * 3  # base is not compounded
    lrs = apply_lr(opt, 250, 2, sched)
    assert lrs == pytest.approx([0.0082] * 3)
    assert [g["momentum"] for g in opt.param_groups] == pytest.approx([0.937] * 3)


def test_apply_lr_adam_keeps_betas_and_uses_cosine():
    """AdamW, lr0=0.001, epochs=4, lrf=0.01, cosine, no warm-up: epoch 2 -> 0.5*(0.01-1)+1 = 0.505 -> lr 5.05e-4."""
    opt = build_optimizer(small_model(), "adamw", lr=0.001, momentum=0.9, weight_decay=0.05)
    lrs = apply_lr(opt, 1000, 2, LRSchedule(epochs=4, lrf=0.01, schedule="cosine", warmup_iters=0))
    assert lrs == pytest.approx([5.05e-4] * 3)
    assert all(g["betas"] == (0.9, 0.999) and "momentum" not in g for g in opt.param_groups)
    assert math.isclose(opt.param_groups[0]["lr"], 5.05e-4)


def test_apply_lr_requires_initial_lr():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(KeyError, match="initial_lr"):
        apply_lr(opt, 0, 0, LRSchedule(epochs=1, lrf=0.1))
