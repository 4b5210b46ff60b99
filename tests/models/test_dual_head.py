"""DualHead (NMS-free training): both heads in training, the one-to-one head alone in eval mode, detached features."""
from __future__ import annotations

import torch

from detector.models.heads.decoupled import DecoupledHead
from detector.models.heads.dual import DualHead, DualLevels, dual_head
from detector.models.priors import PointPriorGenerator


def make(detach=True):
    build = dual_head(lambda *a: DecoupledHead(*a, depth=1), detach=detach)
    return build([8, 16], 3, 1, [8, 16], False)


def inputs():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 8, 4, 4, generator=g, requires_grad=True),
             torch.randn(2, 16, 2, 2, generator=g, requires_grad=True)]
    priors = PointPriorGenerator([8, 16])([(4, 4), (2, 2)], "cpu", torch.float32)
    return feats, priors


def test_training_gives_both_heads_eval_only_the_one_to_one():
    head, (feats, priors) = make(), inputs()
    assert isinstance(head, DualHead)
    levels = head(feats)
    assert isinstance(levels, DualLevels) and [t.shape for t in levels] == [t.shape for t in levels.one_to_one]
    out = head.flatten(levels, priors)
    assert out.one_to_one is not None and out.one_to_one.one_to_one is None
    torch.testing.assert_close(out.one_to_one.cls, head.one_to_one.flatten(head.one_to_one(feats), priors).cls)
    assert not torch.equal(out.cls, out.one_to_one.cls)  # two heads, initialised independently
    head.eval()
    eval_out = head.flatten(head(feats), priors)
    assert eval_out.one_to_one is None
    torch.testing.assert_close(eval_out.box, head.one_to_one.flatten(head.one_to_one(feats), priors).box)


def test_one_to_one_loss_does_not_reach_the_features_when_detached():
    for detach, reaches in ((True, False), (False, True)):
        head, (feats, priors) = make(detach), inputs()
        out = head.flatten(head(feats), priors)
        grads = torch.autograd.grad(out.one_to_one.cls.sum() + out.one_to_one.box.sum(), feats, allow_unused=True)
        assert all((g is not None and bool(g.abs().sum() > 0)) == reaches for g in grads)
        many = torch.autograd.grad(out.cls.sum(), feats)  # the one-to-many head always trains the features
        assert all(bool(g.abs().sum() > 0) for g in many)
