"""Exponential moving average (EMA) of model weights, as in the YOLOv5 recipe.

After the ``k``-th update the averaged state is ``ema = d_k * ema + (1 - d_k) * model`` with the ramped decay
``d_k = decay * (1 - exp(-k / tau))`` (small early, so the average follows the fast-changing model at the
start of training, approaching ``decay`` after a few ``tau`` updates).

Checkpoint contract (see ``detector/engine/checkpoint.py``): ``ckpt["ema"] = ema.module.state_dict()`` (a plain
model state dict, loadable into a fresh model for evaluation) and ``ckpt["ema_updates"] = ema.updates``;
:meth:`ModelEMA.state_dict` returns exactly those two entries under the keys ``"module"`` and ``"updates"``.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import Any

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile wrapper
            model = model._orig_mod
        else:
            return model


def ema_decay(updates: int, decay: float = 0.9999, tau: float = 2000.0) -> float:
    """Decay used at update number ``updates`` (counted from 1): ``decay * (1 - exp(-updates / tau))``."""
    return decay * (1.0 - math.exp(-updates / tau))


class ModelEMA:
    """Keeps an exponential moving average of a model's state (parameters and buffers).

    Args:
        model: the trained model (wrappers are unwrapped); it is deep-copied, put in eval mode and frozen.
        decay: asymptotic decay; 0 <= decay < 1.
        tau: ramp length in updates (> 0).
        updates: number of updates already done (for resuming).

    Attributes:
        module (nn.Module): the averaged model; evaluate this one.
        updates (int): number of :meth:`update` calls so far.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"EMA tau must be > 0, got {tau}")
        self.module = deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = int(updates)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Fold the current state of ``model`` into the average; returns the decay used.

        Floating-point entries of the state dict (parameters and float buffers such as BN running stats) are
        averaged; other entries (integer buffers such as BN ``num_batches_tracked``) are copied.

        Raises:
            KeyError: ``model`` has different state-dict keys than the averaged model.
        """
        model_state = unwrap_model(model).state_dict()
        ema_state = self.module.state_dict()
        if model_state.keys() != ema_state.keys():
            differing = sorted(set(ema_state) ^ set(model_state))
            raise KeyError(f"model and EMA state dicts differ in keys: {differing[:10]}")
        self.updates += 1
        d = ema_decay(self.updates, self.decay, self.tau)
        for key, ema_value in ema_state.items():
            value = model_state[key].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(d).add_(value.to(ema_value.dtype), alpha=1.0 - d)
            else:
                ema_value.copy_(value)
        return d

    def state_dict(self) -> dict[str, Any]:
        """``{"module": averaged model state dict, "updates": int}``."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output (strict key match on the model state)."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
