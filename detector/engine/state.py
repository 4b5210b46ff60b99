"""What a checkpoint holds of a training run, and how a run is put back from one.

:func:`training_checkpoint` fills the checkpoint contract of :mod:`detector.engine.checkpoint` from the live
objects; :func:`restore_training` loads them back for ``--resume``. The two are each other's inverse: a resumed
run continues with the weights, EMA, optimizer and scaler state, stateful losses, RNG state and best fitness the
interrupted one had after its last completed epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from detector.config import Config, config_to_dict
from detector.engine.checkpoint import CHECKPOINT_VERSION, load_checkpoint
from detector.engine.ema import ModelEMA
from detector.engine.rng import get_rng_state, set_rng_state
from detector.errors import ConfigError


@dataclass
class TrainState:
    """What changes during a run and goes into every checkpoint."""

    epoch: int = -1  # last completed epoch
    best_fitness: float = -1.0
    metrics: dict = field(default_factory=dict)


def training_checkpoint(state: TrainState, cfg: Config, model: nn.Module, ema: ModelEMA | None,
                        optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, criterion,
                        names: list[str]) -> dict:
    """The checkpoint dict of a run after epoch ``state.epoch`` (``names``: the dataset's class names)."""
    return {
        "model": model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "ema_updates": ema.updates if ema is not None else 0,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "criterion": criterion.state_dict() if hasattr(criterion, "state_dict") else {},
        "epoch": state.epoch,
        "best_fitness": state.best_fitness,
        "config": config_to_dict(cfg),
        "metrics": state.metrics,
        "version": CHECKPOINT_VERSION,
        "rng": get_rng_state(),
        "num_classes": len(names),
        "names": list(names),
    }


def restore_training(path: str | Path, epochs: int, model: nn.Module, ema: ModelEMA | None,
                     optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, criterion,
                     device: torch.device) -> TrainState:
    """Load the checkpoint at ``path`` into the run's objects (and the RNG state); return its TrainState.

    ``epochs`` is the run's ``train.epochs``: at least the epochs already trained (a resumed run can be extended,
    not shortened; a ConfigError on ``train.epochs`` otherwise)."""
    ckpt = load_checkpoint(path, map_location=device)
    if ckpt["epoch"] + 1 > epochs:
        raise ConfigError("train.epochs", f"{path} has already trained {ckpt['epoch'] + 1} epochs, more than "
                                          f"train.epochs={epochs}: a resumed run can only be extended")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict({"module": ckpt["ema"], "updates": ckpt["ema_updates"]})
    if ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if hasattr(criterion, "load_state_dict"):  # stateful losses (wiou, ghm); absent in older checkpoints
        criterion.load_state_dict(ckpt.get("criterion", {}))
    set_rng_state(ckpt["rng"])
    return TrainState(epoch=ckpt["epoch"], best_fitness=ckpt["best_fitness"], metrics=ckpt.get("metrics", {}))
