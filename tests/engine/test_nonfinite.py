"""Non-finite loss terms (detector/engine/nonfinite.py and the trainer): the term named, the batch saved, the step
skipped before the optimizer sees it, and the run stopped after ``train.max_bad_steps`` steps in a row, with
``last.pt`` of the last completed epoch intact."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from detector import build
from detector.config import load_config
from detector.engine import trainer
from detector.engine.nonfinite import NonFiniteGuard, NonFiniteLossError, nonfinite_terms
from detector.engine.optim import LRSchedule
from detector.engine.epoch import train_one_epoch
from detector.engine.trainer import read_history
from tiny_model import Tiny  # noqa: E402 (tests/engine on sys.path, as for ddp_worker)

TINY = ["data.max_images=4", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.nbs=2",
        "train.epochs=2", "eval.batch_size=4", "train.warmup_epochs=0"]


def test_nonfinite_terms_names_nan_and_both_infinities():
    assert nonfinite_terms({"lbox": 1.0, "lobj": math.nan, "lcls": -math.inf, "loss": math.inf}) == ["lobj", "lcls", "loss"]
    assert nonfinite_terms({}) == [] and nonfinite_terms({"lbox": 0.0}) == []


def test_guard_skips_up_to_max_bad_steps_in_a_row_then_stops(tmp_path):
    """max_bad_steps=2: bad, bad (skipped), good (resets), bad, bad (skipped), bad -> the third in a row stops."""
    guard = NonFiniteGuard(max_bad_steps=2, save_dir=None)
    nan, ok = {"lobj": math.nan}, {"lobj": 1.0}
    assert [guard.check(t, None, 0, i) for i, t in enumerate([nan, nan, ok, nan, nan])] == [False, False, True,
                                                                                          False, False]
    with pytest.raises(NonFiniteLossError, match=r"lobj=nan at epoch 1, batch 5.*3 non-finite step\(s\) in a row"):
        guard.check(nan, None, 0, 5)
    assert guard.skipped == 4


def _nan_at(bad: set[int]):
    calls = []

    def criterion(outputs, targets):
        loss = (outputs.box - 3.0) ** 2
        if len(calls) in bad:
            loss = loss * math.nan
        calls.append(1)
        return {"lbox": loss, "loss": loss}
    return criterion


def test_a_nan_step_drops_its_window_and_never_reaches_the_optimizer(tmp_path):
    """w = 1, loss (w - 3)^2, gradient 2 (w - 3), SGD lr 0.1 without momentum, accumulate 2, batch 0 NaN.
    The window of batches 0-1 steps with batch 1's gradient only: w = 1 - 0.1 * 2 * (1 - 3) = 1.4.
    Batches 2-3 step with the sum of two equal gradients: w = 1.4 - 0.1 * 2 * 2 * (1.4 - 3) = 2.04.
    Keeping batch 0's gradient would make w NaN. Mean lbox over the 3 good batches: (4 + 2.56 + 2.56) / 3."""
    model = Tiny()
    optimizer = torch.optim.SGD([{"params": [model.w], "initial_lr": 0.1}], lr=0.1)
    steps = []
    original = optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    loader = [SimpleNamespace(images=torch.ones(1, 3, 2, 2), targets=torch.zeros(0, 6),
                              metas=[SimpleNamespace(image_id=7 + i)]) for i in range(4)]
    guard = NonFiniteGuard(max_bad_steps=1, save_dir=tmp_path)
    terms = train_one_epoch(model, _nan_at({0}), loader, optimizer, torch.amp.GradScaler("cpu", enabled=False), None,
                            torch.device("cpu"), 0, LRSchedule(epochs=1, lrf=1.0, momentum=0.0), 2, None, None, False,
                            progress=False, guard=guard)
    assert len(steps) == 2 and guard.skipped == 1
    assert model.w.item() == pytest.approx(2.04, abs=1e-6)
    assert terms["lbox"] == pytest.approx((4 + 2.56 + 2.56) / 3, abs=1e-5)
    saved = torch.load(tmp_path / "bad_batch_e1_b0.pt", weights_only=True)
    assert saved["image_ids"] == [7] and math.isnan(saved["terms"]["lbox"]) and saved["batch"] == 0
    assert torch.equal(saved["images"], loader[0].images)


def test_steps_the_amp_scaler_skips_are_counted_not_fatal():
    """w = 1, loss (w - 3)^2 (finite: the guard lets every step through), gradient -4 at w = 1, GradScaler with
    initial scale 2^127, SGD lr 0.1. Scaled gradients: -4 * 2^127 = -2^129 (inf in float32): skipped, scale 2^126;
    -2^128: still inf, skipped, scale 2^125; -2^127 is finite: w = 1 - 0.1 * (-4) = 1.4; then
    w = 1.4 - 0.1 * 2 * (1.4 - 3) = 1.72. Two steps skipped by the scaler, counted in amp_skipped."""
    model = Tiny()
    optimizer = torch.optim.SGD([{"params": [model.w], "initial_lr": 0.1}], lr=0.1)
    loader = [SimpleNamespace(images=torch.ones(1, 3, 2, 2), targets=torch.zeros(0, 6),
                              metas=[SimpleNamespace(image_id=i)]) for i in range(4)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
    guard = NonFiniteGuard()
    train_one_epoch(model, _nan_at(set()), loader, optimizer, scaler, None, torch.device("cpu"), 0,
                    LRSchedule(epochs=1, lrf=1.0, momentum=0.0), 1, None, None, False, progress=False, guard=guard)
    assert guard.amp_skipped == 2 and guard.skipped == 0
    assert scaler.get_scale() == 2.0 ** 125
    assert model.w.item() == pytest.approx(1.72, abs=1e-6)


def _nan_term(monkeypatch, term: str, bad_calls: set[int]):
    """Make the run's criterion return NaN for ``term`` at the given calls (0-based, counted over the run)."""
    build_all = build.build_all

    class NaNCriterion:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, outputs, targets):
            losses = dict(self.inner(outputs, targets))
            if self.calls in bad_calls:
                losses[term] = losses[term] * math.nan
                losses["loss"] = losses["loss"] + losses[term]
            self.calls += 1
            return losses

    def patched(cfg, device, **dist):
        parts = build_all(cfg, device, **dist)
        parts.criterion = NaNCriterion(parts.criterion)
        return parts

    monkeypatch.setattr(build, "build_all", patched)


def test_a_run_stops_on_a_nan_term_naming_it_saving_the_batch_and_keeping_last_pt(tmp_path, monkeypatch):
    """2 batches per epoch; the criterion's third call (epoch 2, batch 0) returns NaN for lobj; max_bad_steps 0."""
    _nan_term(monkeypatch, "lobj", {2})
    snapshot = {}

    def keep(epoch, metrics):
        snapshot["bytes"] = (tmp_path / "run" / "last.pt").read_bytes()

    cfg = load_config("yolov5_ciou", TINY)
    with pytest.raises(NonFiniteLossError, match=r"lobj=nan at epoch 2, batch 0.*bad_batch_e2_b0\.pt"):
        trainer.fit(cfg, run_dir=tmp_path / "run", on_epoch_end=keep, progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == snapshot["bytes"]  # epoch 1's checkpoint, intact
    saved = torch.load(tmp_path / "run" / "bad_batch_e2_b0.pt", weights_only=True)
    assert saved["images"].shape == (2, 3, 64, 64) and saved["targets"].shape[1] == 6
    assert len(saved["image_ids"]) == 2 and math.isnan(saved["terms"]["lobj"])
    assert [r["epoch"] for r in read_history(tmp_path / "run" / "history.jsonl")] == [1]


def test_a_run_within_max_bad_steps_skips_the_step_and_finishes(tmp_path, monkeypatch, capsys):
    _nan_term(monkeypatch, "lcls", {1})
    cfg = load_config("yolov5_ciou", TINY + ["train.max_bad_steps=1"])
    result = trainer.fit(cfg, run_dir=tmp_path / "run", progress=False)
    history = read_history(tmp_path / "run" / "history.jsonl")
    assert [r["skipped_steps"] for r in history] == [1, 0]
    assert all(math.isfinite(v) for r in history for v in r["train"].values())
    assert result["train"] and (tmp_path / "run" / "bad_batch_e1_b1.pt").is_file()
    out = capsys.readouterr().out
    assert "lcls=nan at epoch 1, batch 1: step skipped" in out
    assert "epoch 1/2" in out and "skipped 1" in out
