"""Optimizer construction and the learning-rate / momentum schedule of the YOLOv5 recipe.

Everything here except :func:`build_optimizer` and :func:`apply_lr` is a pure function of numbers, so the
schedule can be read, plotted and tested without building a model.

Parameter groups (fixed order, always three groups, some possibly empty):
    group 0 (``WEIGHT_GROUP``)  weights of every module that is not a normalisation layer (conv, linear, ...),
                                 and any other parameter that is neither a bias nor a norm weight; with decay.
    group 1 (``NORM_GROUP``)    ``weight`` of every module whose class name contains ``"Norm"``
                                 (BatchNorm2d, GroupNorm, LayerNorm, ...); no decay.
    group 2 (``BIAS_GROUP``)    every parameter named ``bias`` (conv, linear and norm biases); no decay.

YOLOv5 creates the same three groups in the order (bias, weight, norm); this module orders them
(weight, norm, bias) and keys the warm-up on ``BIAS_GROUP`` instead of group 0, which gives the same
learning rates per parameter.

Schedule within one training iteration ``iteration`` (global, counted from 0 over all epochs) of epoch ``epoch``:
    lf = lr_factor(epoch, epochs, lrf, schedule)
    after warm-up (iteration > warmup_iters):   lr = base_lr * lf for every group, momentum = momentum
    during warm-up (iteration <= warmup_iters): lr goes linearly from 0.0 (warmup_bias_lr for the bias group)
                                                to base_lr * lf, momentum from warmup_momentum to momentum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

WEIGHT_GROUP, NORM_GROUP, BIAS_GROUP = 0, 1, 2
GROUP_NAMES = ("weight", "norm", "bias")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("linear", "cosine")


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Split the parameters of ``model`` into (decayed weights, norm weights, biases).

    Args:
        model: any module; parameters shared between modules (tied weights) are listed once, in the group
            of the first module (in ``model.modules()`` order) that owns them.

    Returns:
        (weights, norm_weights, biases): three lists of parameters that together hold every parameter of
        ``model`` exactly once. A parameter named ``bias`` is a bias, a parameter named ``weight`` of a module
        whose class name contains ``"Norm"`` is a norm weight, every other parameter is a decayed weight.
    """
    groups: tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]] = ([], [], [])
    seen: set[int] = set()
    for module in model.modules():
        is_norm = "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if name == "bias":
                groups[BIAS_GROUP].append(param)
            elif name == "weight" and is_norm:
                groups[NORM_GROUP].append(param)
            else:
                groups[WEIGHT_GROUP].append(param)
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.937,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """Build the YOLOv5 optimizer with three parameter groups (see the module docstring for the groups).

    Args:
        model: the module to optimise.
        name: ``"sgd"`` (momentum ``momentum``, Nesterov when ``nesterov``), ``"adam"`` or ``"adamw"``
            (``betas=(momentum, 0.999)``, ``nesterov`` ignored).
        lr: initial learning rate ``lr0``; also stored as ``initial_lr`` in every group, which
            :func:`apply_lr` scales.
        momentum: SGD momentum, or Adam's ``beta1``.
        weight_decay: decay of group 0 (already scaled, see :func:`scaled_weight_decay`); groups 1 and 2 get 0.

    Returns:
        the optimizer; ``param_groups[i]["name"]`` is ``GROUP_NAMES[i]``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or a model without parameters.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer name {name!r} is not one of {', '.join(OPTIMIZERS)}")
    groups = split_parameters(model)
    if not any(groups):
        raise ValueError(f"model {type(model).__name__} has no parameters to optimise")
    decays = (weight_decay, 0.0, 0.0)
    param_groups = [
        {"params": params, "weight_decay": decay, "name": group_name, "initial_lr": lr}
        for params, decay, group_name in zip(groups, decays, GROUP_NAMES)
    ]
    if key == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if key == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=(momentum, 0.999))
    return torch.optim.AdamW(param_groups, lr=lr, betas=(momentum, 0.999))


def accumulate_steps(batch_size: int, nbs: int = 64) -> int:
    """Number of batches whose gradients are accumulated before one optimizer step: ``max(round(nbs / bs), 1)``.

    ``nbs`` is the nominal batch size the hyperparameters were tuned for. Python's ``round`` (ties to even)
    is used, as in YOLOv5: ``accumulate_steps(16) == 4``, ``accumulate_steps(24) == 3``, ``accumulate_steps(128) == 1``.
    """
    if batch_size < 1 or nbs < 1:
        raise ValueError(f"batch_size ({batch_size}) and nbs ({nbs}) must be positive integers")
    return max(round(nbs / batch_size), 1)


def scaled_weight_decay(weight_decay: float, batch_size: int, accumulate: int, nbs: int = 64) -> float:
    """Weight decay scaled to the effective batch: ``weight_decay * batch_size * accumulate / nbs``.

    Each optimizer step sees ``batch_size * accumulate`` images instead of the nominal ``nbs``; the decay per
    step is scaled by the same ratio so the decay per image stays what the hyperparameters were tuned for.
    """
    if batch_size < 1 or accumulate < 1 or nbs < 1:
        raise ValueError(f"batch_size ({batch_size}), accumulate ({accumulate}) and nbs ({nbs}) must be positive")
    return weight_decay * batch_size * accumulate / nbs


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, min_iters: int = 100) -> int:
    """Number of warm-up iterations: ``max(round(warmup_epochs * batches_per_epoch), min_iters)``.

    As YOLOv5, except that ``warmup_epochs <= 0`` disables warm-up (returns 0) instead of still warming up
    for ``min_iters`` iterations.
    """
    if warmup_epochs <= 0:
        return 0
    return max(round(warmup_epochs * batches_per_epoch), min_iters)


def lr_factor(epoch: float, epochs: int, lrf: float, schedule: str = "linear") -> float:
    """Multiplier of the initial learning rate at ``epoch`` (may be fractional), from 1 at 0 to ``lrf`` at ``epochs``.

    linear:  ``(1 - epoch / epochs) * (1 - lrf) + lrf``
    cosine:  ``((1 - cos(epoch * pi / epochs)) / 2) * (lrf - 1) + 1``   (YOLOv5's ``one_cycle(1, lrf, epochs)``)

    Raises:
        ValueError: ``schedule`` is not ``"linear"`` or ``"cosine"``, or ``epochs < 1``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if schedule == "linear":
        return (1.0 - epoch / epochs) * (1.0 - lrf) + lrf
    if schedule == "cosine":
        return ((1.0 - math.cos(epoch * math.pi / epochs)) / 2.0) * (lrf - 1.0) + 1.0
    raise ValueError(f"lr schedule {schedule!r} is not one of {', '.join(SCHEDULES)}")


def warmup_values(
    iteration: int,
    warmup_iters: int,
    base_lr: float,
    lf_value: float,
    group_index: int,
    warmup_bias_lr: float,
    warmup_momentum: float,
    momentum: float,
) -> tuple[float, float]:
    """Learning rate and momentum of parameter group ``group_index`` at global ``iteration``.

    During warm-up (``iteration <= warmup_iters``, linear interpolation over ``[0, warmup_iters]`` as
    ``np.interp``):
        lr       from ``warmup_bias_lr`` (group ``BIAS_GROUP``) or 0.0 (other groups) to ``base_lr * lf_value``
        momentum from ``warmup_momentum`` to ``momentum``
    After warm-up: ``(base_lr * lf_value, momentum)``.

    Args:
        iteration: global iteration (batches seen since the start of training, from 0).
        warmup_iters: see :func:`warmup_iterations`; 0 disables warm-up.
        base_lr: the group's initial learning rate ``lr0``.
        lf_value: ``lr_factor(epoch, ...)`` of the current epoch.

    Returns:
        (lr, momentum) as floats.
    """
    target_lr = base_lr * lf_value
    if warmup_iters <= 0 or iteration > warmup_iters:
        return target_lr, momentum
    xp = [0.0, float(warmup_iters)]
    start_lr = warmup_bias_lr if group_index == BIAS_GROUP else 0.0
    lr = float(np.interp(iteration, xp, [start_lr, target_lr]))
    mom = float(np.interp(iteration, xp, [warmup_momentum, momentum]))
    return lr, mom


@dataclass(frozen=True)
class LRSchedule:
    """Everything :func:`apply_lr` needs besides the optimizer, the iteration and the epoch.

    Attributes:
        epochs: total number of training epochs (the schedule reaches ``lrf`` at ``epochs``).
        lrf: final learning rate as a fraction of ``lr0``.
        schedule: ``"linear"`` or ``"cosine"`` (see :func:`lr_factor`).
        warmup_iters: from :func:`warmup_iterations`; 0 disables warm-up.
        warmup_bias_lr: learning rate of the bias group at iteration 0.
        warmup_momentum: momentum at iteration 0.
        momentum: momentum after warm-up (the optimizer's momentum).
    """

    epochs: int
    lrf: float
    schedule: str = "linear"
    warmup_iters: int = 0
    warmup_bias_lr: float = 0.1
    warmup_momentum: float = 0.8
    momentum: float = 0.937


def apply_lr(optimizer: torch.optim.Optimizer, iteration: int, epoch: float, schedule: LRSchedule) -> list[float]:
    """Set every group's ``lr`` and ``momentum`` for this iteration; call once per batch, before the forward.

    Uses each group's ``initial_lr`` (set by :func:`build_optimizer`) as ``base_lr``,
    ``lr_factor(epoch, schedule.epochs, schedule.lrf, schedule.schedule)`` and :func:`warmup_values`.
    As in YOLOv5, momentum is written only to groups that have a ``momentum`` entry (SGD); Adam's ``beta1``
    is not warmed up. Group index ``i`` is the position in ``optimizer.param_groups``, so the bias group must
    be ``BIAS_GROUP``. ``schedule`` may be any object with the attributes of :class:`LRSchedule`.

    Args:
        iteration: global iteration (batches since the start of training, from 0).
        epoch: current epoch (0-based; a float gives a schedule that also moves within an epoch).

    Returns:
        the learning rate of each group, in group order (for logging).

    Raises:
        KeyError: a group has no ``initial_lr``.
    """
    lf_value = lr_factor(epoch, schedule.epochs, schedule.lrf, schedule.schedule)
    lrs = []
    for index, group in enumerate(optimizer.param_groups):
        if "initial_lr" not in group:
            raise KeyError(
                f"optimizer param group {index} has no 'initial_lr'; build the optimizer with build_optimizer "
                "or set group['initial_lr'] = lr0 before calling apply_lr"
            )
        lr, mom = warmup_values(
            iteration,
            schedule.warmup_iters,
            group["initial_lr"],
            lf_value,
            index,
            schedule.warmup_bias_lr,
            schedule.warmup_momentum,
            schedule.momentum,
        )
        group["lr"] = lr
        if "momentum" in group:
            group["momentum"] = mom
        lrs.append(lr)
    return lrs
