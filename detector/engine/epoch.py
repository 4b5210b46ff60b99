"""One pass over the training data: forward (under autocast when the run uses it), loss in float32, backward,
gradient accumulation to the nominal batch, clipping, optimizer step, EMA update.

Called by :func:`detector.engine.trainer.fit` once per epoch and by the training benchmarks
(``benchmarks/_common.py``), so the benchmarks time this very code.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from detector.assigners.stats import assignment_stats
from detector.engine import distributed
from detector.engine.ema import ModelEMA
from detector.engine.evaluate import _progress, float32_outputs
from detector.engine.nonfinite import NonFiniteGuard
from detector.engine.optim import LRSchedule, apply_lr


def train_one_epoch(
    model: nn.Module,
    criterion,
    loader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: ModelEMA | None,
    device: torch.device,
    epoch: int,
    schedule: LRSchedule,
    accumulate: int,
    grad_clip: float | None,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    writer=None,
    progress: bool = True,
    guard: NonFiniteGuard | None = None,
    world_size: int = 1,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss term (per image, as logged by YOLOv5) and of each
    assignment statistic (``assign/<name>``, :func:`detector.assigners.stats.assignment_stats`) over the finite steps.

    ``guard`` checks every step's loss terms after the backward pass and before the optimizer step: a non-finite
    step is skipped together with the gradients accumulated since the last optimizer step, or the run stops
    (:class:`~detector.engine.nonfinite.NonFiniteLossError`); default: stop at the first, save nothing.

    ``world_size`` > 1 (data parallelism, ``model`` wrapped in DistributedDataParallel): each rank's loss is its
    share of the global loss, multiplied by ``world_size`` because DDP averages the gradients; the logged terms and
    statistics are summed (averaged) over the ranks, so every rank sees the same values and skips the same steps."""
    guard = guard if guard is not None else NonFiniteGuard()
    model.train()
    num_batches = len(loader)
    sums: dict[str, float] = {}
    assign_sums: dict[str, Tensor] = {}
    good = 0
    it = _progress(loader, total=num_batches, desc=f"epoch {epoch + 1}/{schedule.epochs}", enabled=progress)
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(it):
        step = i + num_batches * epoch  # global iteration
        apply_lr(optimizer, step, epoch, schedule)
        images = batch.images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch.targets.to(device)
        steps = (i + 1) % accumulate == 0 or i == num_batches - 1
        # DDP: gradients are all-reduced only on the micro-batch that steps; the others accumulate locally
        sync = contextlib.nullcontext() if steps or world_size == 1 else model.no_sync()
        with sync:
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
            losses = criterion(float32_outputs(outputs), targets)
            scaler.scale(losses["loss"] * world_size).backward()
        values = distributed.all_reduce_sum(torch.stack([v.detach().reshape(()) for v in losses.values()]))  # each rank's share
        terms = dict(zip(losses, values.tolist()))  # the step's one device sync
        if not guard.check(terms, batch, epoch, i):
            optimizer.zero_grad(set_to_none=True)  # NaN / inf gradients: never stepped, never carried on
            continue
        del terms["loss"]
        good += 1
        if getattr(criterion, "last_assignment", None) is not None:  # tensors: no device sync until the epoch ends
            stats = assignment_stats(criterion.last_assignment, targets, outputs.priors, images.shape[0])
            for k, v in stats.items():
                assign_sums[k] = assign_sums.get(k, 0.0) + v.detach()
        # YOLOv5 accumulates gradients to a nominal batch of `nbs` images before stepping. The last batch of an
        # epoch always steps, so no gradient crosses an epoch boundary (checkpoints hold none).
        if steps:
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
            guard.scaled_step(scaler, optimizer)  # counts the steps AMP's scaler skips (overflowed float16 gradients)
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        if progress and hasattr(it, "set_postfix"):
            it.set_postfix({k: f"{v / good:.4f}" for k, v in sums.items()}, refresh=False)
        if writer is not None:
            for g, group in enumerate(optimizer.param_groups):
                writer.add_scalar(f"lr/pg{g}", group["lr"], step)
    means = {k: v / max(good, 1) for k, v in sums.items()}
    if assign_sums:  # the ranks' means, averaged
        names = list(assign_sums)
        averaged = distributed.all_reduce_sum(torch.stack([assign_sums[k] for k in names]).float()) / world_size
        means.update({f"assign/{k}": v / max(good, 1) for k, v in zip(names, averaged.tolist())})
    return means
