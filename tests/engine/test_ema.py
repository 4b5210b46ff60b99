"""Tests for detector/engine/ema.py: ramped decay, averaging of float state, copying of int buffers, resume."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.engine.ema import ModelEMA, ema_decay, unwrap_model


class OneParam(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))


def test_ema_decay_formula():
    """decay=0.9, tau=1: d1 = 0.9*(1-e^-1) = 0.9*0.63212056 = 0.56890850;
    d2 = 0.9*(1-e^-2) = 0.9*0.86466472 = 0.77819825; d0 = 0; d_inf = decay."""
    assert ema_decay(1, 0.9, 1.0) == pytest.approx(0.56890850)
    assert ema_decay(2, 0.9, 1.0) == pytest.approx(0.77819825)
    assert ema_decay(0, 0.9999, 2000) == 0.0
    assert ema_decay(10**6, 0.9999, 2000) == pytest.approx(0.9999)


def test_ema_two_updates_hand_computed():
    """EMA starts at w=1. Model w=3 then w=5; decay=0.9, tau=1.

    update 1: d1 = 0.56890850 -> ema = 0.56890850*1 + 0.43109150*3 = 1.86218299
    update 2: d2 = 0.77819825 -> ema = 0.77819825*1.86218299 + 0.22180175*5 = 1.44914754 + 1.10900877 = 2.55815631
    """
    model = OneParam(1.0)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model.w.fill_(3.0)
    assert ema.update(model) == pytest.approx(0.56890850)
    assert ema.module.w.item() == pytest.approx(1.86218299, abs=1e-6)
    with torch.no_grad():
        model.w.fill_(5.0)
    ema.update(model)
    assert ema.module.w.item() == pytest.approx(2.55815631, abs=1e-6)
    assert ema.updates == 2
    assert model.w.item() == 5.0  # the trained model is not touched


def test_ema_copy_is_frozen_eval_and_independent():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    ema = ModelEMA(model)
    assert not ema.module.training and model.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert ema.module[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_ema_averages_float_buffers_and_copies_int_buffers():
    """BN after 3 forward passes: num_batches_tracked = 3 (int64) is copied; running_mean is averaged.

    decay=0.5, tau=1e-9 -> d1 = 0.5 exactly (exp(-1e9) = 0): ema_mean = 0.5*0 + 0.5*model_mean.
    """
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)
    for _ in range(3):
        model(torch.randn(4, 2))
    ema.update(model)
    bn_ema, bn = ema.module[1], model[1]
    assert bn_ema.num_batches_tracked.item() == 3 and bn_ema.num_batches_tracked.dtype == torch.int64
    torch.testing.assert_close(bn_ema.running_mean, 0.5 * bn.running_mean)
    torch.testing.assert_close(bn_ema.running_var, 0.5 * 1.0 + 0.5 * bn.running_var)


def test_ema_unwraps_data_parallel():
    model = nn.Linear(2, 1)
    wrapped = nn.DataParallel(model)  # CPU-only DataParallel just holds .module
    assert unwrap_model(wrapped) is model
    ema = ModelEMA(wrapped, decay=0.5, tau=1e-9)
    assert isinstance(ema.module, nn.Linear)
    ema.update(wrapped)
    torch.testing.assert_close(ema.module.weight, model.weight.detach())  # 0.5*w + 0.5*w


def test_ema_resume_equality():
    """An EMA restored from state_dict() after 3 updates continues exactly like the uninterrupted one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    ema_a = ModelEMA(model, decay=0.99, tau=5)

    def step():
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(2, 1, 5, 5))

    for _ in range(3):
        step()
        ema_a.update(model)
    saved = ema_a.state_dict()
    assert saved["updates"] == 3
    ema_b = ModelEMA(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), decay=0.99, tau=5)
    ema_b.load_state_dict({"module": {k: v.clone() for k, v in saved["module"].items()}, "updates": 3})
    assert ema_b.updates == 3
    for _ in range(2):
        step()
        da, db = ema_a.update(model), ema_b.update(model)
        assert da == db == pytest.approx(ema_decay(ema_a.updates, 0.99, 5))
    for key, value in ema_a.module.state_dict().items():
        torch.testing.assert_close(ema_b.module.state_dict()[key], value, rtol=0, atol=0)


def test_ema_errors():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.0)
    ema = ModelEMA(nn.Linear(1, 1))
    with pytest.raises(KeyError, match="differ"):
        ema.update(nn.Linear(1, 1, bias=False))
    assert ema.updates == 0  # a failed update is not counted
