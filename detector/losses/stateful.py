"""Losses with state carried across calls: Wise-IoU v1-v3 (``wiou`` in ``BOX``) and GHM-C (``ghm`` in ``CLS``).

A stateful loss is a small class registered in its table in place of a function. :class:`LossSpec`
(:mod:`detector.losses.spec`) makes a fresh instance for every spec it builds, so every criterion, hence every run,
starts from the initial state. An instance is called like the pure losses, ``loss(pred, target, *,
reduction="none", eps=..., **params)``, the config's parameters passed at every call, and has besides:

* ``training`` (bool, True on creation), set by ``train(mode=True)`` / ``eval()`` as on an ``nn.Module``: the state
  is updated only by calls made while it is True; other calls use the state as it is (validation must not move
  it). :class:`detector.losses.criterion.DetectionCriterion` forwards its ``train`` / ``eval`` to its losses.
* ``state_dict() -> {name: Tensor}`` and ``load_state_dict(state)``: the state, which the trainer's checkpoint
  keeps under ``"criterion"`` so that a resumed run goes on with it and ends with the weights of an uninterrupted
  one.

The state lives on the device of the inputs (moved there on first use) and is never read back to the host, so a
call adds no device synchronisation.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from detector.losses.iou_variants import wiou_v1_terms
from detector.losses.reduction import reduce_loss
from detector.ops.bce import binary_cross_entropy_with_logits

WIOU_VERSIONS = (1, 2, 3)
WIOU_MOMENTUM = 1 - 0.05 ** (1 / (890 * 34))
"""The paper's ``m = 1 - 0.05^(1 / (t n))`` for its YOLOv7 run: ``n = 890`` batches an epoch, ``t = 34`` epochs
until the AP stops rising quickly (about 1e-4). Use :func:`wiou_momentum` for another schedule."""


def wiou_momentum(batches_per_epoch: int, epochs: int) -> float:
    """Wise-IoU's running-mean momentum ``1 - 0.05^(1 / (t n))``: after ``t n`` updates the initial mean keeps a
    weight of 5 %. ``epochs`` (t) is where the AP gain slows down, not the schedule's length."""
    return 1 - 0.05 ** (1 / (batches_per_epoch * epochs))


class StatefulLoss:
    """Base of the stateful losses: the ``training`` flag and its setters (see the module docstring)."""

    def __init__(self) -> None:
        self.training = True

    def train(self, mode: bool = True) -> "StatefulLoss":
        self.training = bool(mode)
        return self

    def eval(self) -> "StatefulLoss":
        return self.train(False)

    def state_dict(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.state_dict().items())})"


def _check_keys(owner: str, state: Mapping[str, Any], expected: set[str]) -> None:
    if set(state) != expected:
        raise ValueError(f"{owner}.load_state_dict: expected keys {sorted(expected)}, got {sorted(state)}")


def wiou_focusing(beta: Tensor, version: int, gamma: float, alpha: float, delta: float) -> Tensor:
    """Wise-IoU's focusing factor of the outlier degree ``beta = L_IoU* / mean(L_IoU)`` (Tensor[N], no gradient).

    * v1: 1.
    * v2 (monotonic): ``beta^gamma``.
    * v3 (non-monotonic): ``r = beta / (delta alpha^(beta - delta))``: 1 at ``beta = delta``, largest for pairs of
      ordinary quality, small for the best (``beta -> 0``) and for outliers (large ``beta``).
    """
    if version == 1:
        return torch.ones_like(beta)
    if version == 2:
        return beta.pow(gamma)
    return beta / (delta * torch.pow(alpha, beta - delta))


class WIoULoss(StatefulLoss):
    """Wise-IoU (Tong et al. 2023, "Wise-IoU: Bounding Box Regression Loss with Dynamic Focusing Mechanism", arXiv
    2301.10051), config name ``wiou``.

    ``L_v1 = R_WIoU L_IoU`` (:func:`detector.losses.iou_variants.wiou_v1_terms`); ``L_v2``, ``L_v3`` multiply it by
    :func:`wiou_focusing` of ``beta = L_IoU* / mean``. State: ``mean``, the running mean of ``L_IoU`` (0-d tensor,
    1.0 at the start as in the authors' code). In training, a call first moves it towards this call's mean,
    ``mean <- (1 - m) mean + m mean_i(L_IoU_i)`` (no update for an empty call, nor for v1), then uses it.

    Call: ``(pred, target (Tensor[N, 4]) xyxy, *, reduction, eps, version 3, gamma 0.5 (v2), alpha 1.9 and delta 3
    (v3, the paper's YOLOv7 values), momentum m)`` -> Tensor[N].
    """

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor(1.0)

    def __call__(self, pred: Tensor, target: Tensor, *, reduction: str = "none", eps: float = 1e-7, version: int = 3,
                 gamma: float = 0.5, alpha: float = 1.9, delta: float = 3.0,
                 momentum: float = WIOU_MOMENTUM) -> Tensor:
        if version not in WIOU_VERSIONS:
            raise ValueError(f"wiou version must be one of {WIOU_VERSIONS}; got {version!r}")
        if not 0 < momentum <= 1:
            raise ValueError(f"wiou momentum must be in (0, 1]; got {momentum}")
        l_iou, attention = wiou_v1_terms(pred, target, eps)  # (N,) each
        loss = attention * l_iou
        if version > 1:
            mean = self.mean.to(l_iou.device)
            if self.training and l_iou.numel() > 0:
                mean = (1 - momentum) * mean + momentum * l_iou.detach().mean().to(mean.dtype)
            self.mean = mean
            beta = l_iou.detach() / mean.clamp(min=eps).to(l_iou.dtype)  # (N,) outlier degree
            loss = wiou_focusing(beta, version, gamma, alpha, delta) * loss
        return reduce_loss(loss, reduction)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_keys("wiou", state, {"mean"})
        self.mean = torch.as_tensor(state["mean"]).detach().clone().reshape(())


class GHMCLoss(StatefulLoss):
    """GHM-C loss (Li, Liu & Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019), config name ``ghm``.

    BCE on logits, each element weighted by the inverse density of its gradient norm ``g = |sigmoid(x) - t|``:
    ``[0, 1]`` is cut into ``bins`` equal bins (the last one closed), ``R_j`` counts the elements of a call in bin
    ``j``, and with momentum ``m`` the density is the running ``S_j <- m S_j + (1 - m) R_j`` (updated for the
    non-empty bins only, ``S`` starting at 0; ``m = 0``: ``S_j = R_j``). An element in bin ``j`` gets

        ``w = N / (S_j n)``,   N the elements of the call, n the number of non-empty bins,

    as in the authors' code (the paper writes ``M``, all bins, for ``n``). With one bin or uniform ``g`` every
    weight is 1 (for ``m = 0``); easy negatives, crowded in the first bin, are down-weighted. ``w`` has no gradient.
    Every element passed counts (the criterion's ignored priors too).

    State: ``acc`` (Tensor[bins], the ``S_j``), created by the first call; ``state_dict`` is empty before it. Not
    training: the stored ``S_j`` is used, the call's ``R_j`` where ``S_j`` is still 0.

    Call: ``(logits, target (Tensor[...]), *, reduction, bins 10, momentum 0.75)`` -> Tensor[...] per element.
    """

    def __init__(self) -> None:
        super().__init__()
        self.acc: Tensor | None = None

    def __call__(self, logits: Tensor, target: Tensor, *, reduction: str = "none", bins: int = 10,
                 momentum: float = 0.75) -> Tensor:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"ghm bins must be an integer >= 1; got {bins!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"ghm momentum must be in [0, 1); got {momentum}")
        loss = binary_cross_entropy_with_logits(logits, target)  # (...)
        if loss.numel() == 0:
            return reduce_loss(loss, reduction)
        with torch.no_grad():
            g = (logits.detach().sigmoid() - target).abs()  # (...)
            inner_edges = torch.arange(1, bins, device=g.device, dtype=g.dtype) / bins  # (bins - 1,)
            index = torch.bucketize(g, inner_edges, right=True)  # (...) in [0, bins)
            count = torch.bincount(index.flatten(), minlength=bins).to(torch.float32)  # (bins,) R_j
            density = self._density(count, momentum)  # (bins,) S_j
            nonempty = (count > 0).sum()
            weight = (g.numel() / (density * nonempty).clamp(min=1e-12))[index]  # (...)
        return reduce_loss(loss * weight.to(loss.dtype), reduction)

    def _density(self, count: Tensor, momentum: float) -> Tensor:
        """count (Tensor[bins]) -> S (Tensor[bins]); updates ``acc`` in training."""
        if momentum == 0:
            return count
        acc = torch.zeros_like(count) if self.acc is None else self.acc.to(count.device)
        if acc.shape != count.shape:
            raise ValueError(f"ghm state has {acc.numel()} bins, the call asks for {count.numel()}")
        if not self.training:
            return torch.where(acc > 0, acc, count)
        self.acc = torch.where(count > 0, momentum * acc + (1 - momentum) * count, acc)
        return self.acc

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.acc is None else {"acc": self.acc.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_keys("ghm", state, {"acc"} if "acc" in state else set())
        self.acc = torch.as_tensor(state["acc"]).detach().clone() if "acc" in state else None
