"""train_one_epoch: gradient accumulation to the nominal batch, and the step at the end of every epoch."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from detector.engine.optim import LRSchedule
from detector.engine.epoch import train_one_epoch
from tiny_model import Tiny  # noqa: E402 (tests/engine on sys.path, as for ddp_worker)


def criterion(outputs, targets):
    loss = (outputs.box - 3.0) ** 2
    return {"lbox": loss, "loss": loss}


@pytest.mark.parametrize("batches,accumulate,expected_steps", [(5, 2, 3), (4, 2, 2), (3, 1, 3), (3, 8, 1)])
def test_steps_every_accumulate_batches_and_at_epoch_end(batches, accumulate, expected_steps):
    """5 batches, accumulate 2: steps after batches 2, 4 and 5 (the epoch's last) = 3 optimizer steps."""
    model = Tiny()
    optimizer = torch.optim.SGD([{"params": [model.w], "initial_lr": 0.1}], lr=0.1)  # apply_lr reads initial_lr
    calls = []
    original = optimizer.step
    optimizer.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    loader = [SimpleNamespace(images=torch.ones(1, 3, 2, 2), targets=torch.zeros(0, 6)) for _ in range(batches)]
    schedule = LRSchedule(epochs=1, lrf=1.0)
    terms = train_one_epoch(model, criterion, loader, optimizer, torch.amp.GradScaler("cpu", enabled=False), None,
                            torch.device("cpu"), 0, schedule, accumulate, None, None, False, progress=False)
    assert len(calls) == expected_steps
    assert model.w.grad is None  # nothing left over for the next epoch
    assert terms["lbox"] > 0
