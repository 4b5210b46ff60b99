"""The training loop: read it top to bottom.

``fit(cfg)`` builds every part from the config (``detector.build``), then for each epoch runs ``train_one_epoch``
(:mod:`detector.engine.epoch`) and, every ``train.eval_interval`` epochs and at the end, ``evaluate`` with the EMA
weights; it writes ``last.pt`` / ``best.pt`` atomically (:mod:`detector.engine.state` fills them and resumes from
them), TensorBoard scalars and ``results.json``.

Reproducibility: every epoch starts by re-seeding all generators from ``(train.seed, epoch)``, so the
work of an epoch depends only on what the checkpoint holds (weights, EMA, optimizer, scaler, epoch).
That is what makes a resumed run reach the same weights as an uninterrupted one on the CPU.

Under ``torchrun`` (``WORLD_SIZE`` set) the run is data-parallel: each rank trains on its slice of every batch with
DistributedDataParallel, counts the losses divide by are summed over ranks, rank 0 alone writes, and evaluation is
gathered (:mod:`detector.engine.distributed`, which says why the result equals the one-process run's).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from detector import build
from detector.assigners.stats import format_assignment_table
from detector.config import Config, save_config
from detector.engine import distributed
from detector.engine.allocator import keep_freed_memory
from detector.engine.checkpoint import save_checkpoint
from detector.engine.distributed import DistContext, convert_sync_batchnorm, init_distributed, select_device  # noqa: F401
from detector.engine.ema import ModelEMA
from detector.engine.epoch import train_one_epoch
from detector.engine.evaluate import evaluate, float32_outputs, predict  # noqa: F401 (re-exported)
from detector.engine.history import append_history, epoch_line, read_history, truncate_history  # noqa: F401
from detector.engine.nonfinite import NonFiniteGuard
from detector.engine.optim import LRSchedule, accumulate_steps, build_optimizer, scaled_weight_decay, warmup_iterations
from detector.engine.precision import precision, training_model
from detector.engine.rng import seed_everything
from detector.engine.start import check_training_data, load_weights
from detector.engine.state import TrainState, restore_training, training_checkpoint
from detector.evaluation.coco import format_coco_table, write_results_json


def fitness(stats: dict[str, float]) -> float:
    """YOLOv5's model-selection score: 0.1 * mAP50 + 0.9 * mAP50-95."""
    return 0.1 * stats.get("mAP50", 0.0) + 0.9 * stats.get("mAP", 0.0)


def next_run_dir(out_dir: str | Path, name: str) -> Path:
    """runs/train/exp, then exp2, exp3, ... (never overwrites an earlier run)."""
    root = Path(out_dir)
    candidate, k = root / name, 2
    while candidate.exists():
        candidate, k = root / f"{name}{k}", k + 1
    return candidate


def fit(
    cfg: Config,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    weights: str | Path | None = None,
) -> dict:
    """Train as ``cfg`` says; return the final metrics (COCO stats of the last evaluation and loss terms).

    ``resume``: a ``last.pt`` to continue from; the run directory is then the checkpoint's folder and the
    config is the one stored in the checkpoint (the caller passes it as ``cfg``), where ``train.epochs`` may be
    larger than the stored one: the remaining epochs then follow the LR schedule of the longer run (the learning
    rate of epoch e is ``lr_factor(e, train.epochs)``; epochs already trained keep the rates they had).
    ``weights``: a checkpoint whose weights (EMA weights when stored) a new run starts from, with a fresh
    optimizer at epoch 0; its class names must be the dataset's.
    Before anything is built the ``train`` and ``eval.split`` splits are checked
    (:func:`detector.engine.start.check_training_data`): fatal data problems stop the run, all listed.
    A non-finite loss term stops the run after ``train.max_bad_steps`` skipped steps (:mod:`detector.engine.nonfinite`).
    ``on_epoch_end(epoch, metrics)`` is called after each epoch's checkpoint is written.
    Under ``torchrun`` every rank calls ``fit`` with the same arguments (:mod:`detector.engine.distributed`).
    """
    tc = cfg.train
    if resume is not None and weights is not None:
        raise ValueError("give resume (continue a run) or weights (start a new run from them), not both")
    dist_ctx, device, created_group = init_distributed(tc.device)
    try:
        with keep_freed_memory(tc.keep_freed_memory and device.type == "cpu"):  # detector/engine/allocator.py
            return _fit(cfg, dist_ctx, device, run_dir, resume, on_epoch_end, progress, weights)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _fit(cfg: Config, dist_ctx: DistContext, device: torch.device, run_dir, resume, on_epoch_end, progress: bool,
         weights) -> dict:
    tc, main = cfg.train, dist_ctx.is_main
    log = print if main else _quiet
    progress = progress and main
    if main:
        check_training_data(cfg)
    distributed.barrier()
    seed_everything(tc.seed, deterministic=tc.deterministic)
    if resume is not None:
        run_dir = Path(resume).parent
    if main:
        run_dir = Path(run_dir) if run_dir is not None else next_run_dir(tc.out_dir, tc.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    run_dir = Path(distributed.broadcast_object(str(run_dir) if main else None))

    parts = build.build_all(cfg, device, rank=dist_ctx.rank, world_size=dist_ctx.world_size)
    model, criterion, coder = parts.model, parts.criterion, parts.coder
    if dist_ctx.enabled:
        if tc.sync_bn:
            model = parts.model = convert_sync_batchnorm(model, device)
        criterion.count_reducer = distributed.all_reduce_sum
    amp_dtype, channels_last = precision(tc, device)
    if weights is not None:
        load_weights(model, weights, list(parts.train_dataset.names))
        log(f"Starting from the weights of {weights}")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    accumulate = accumulate_steps(tc.batch_size, tc.nbs)
    weight_decay = scaled_weight_decay(tc.weight_decay, tc.batch_size, accumulate, tc.nbs)
    optimizer = build_optimizer(model, tc.optimizer, lr=tc.lr0, momentum=tc.momentum, weight_decay=weight_decay, nesterov=tc.nesterov)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # bfloat16 needs no scaling
    ema = ModelEMA(model, decay=tc.ema_decay, tau=tc.ema_tau) if tc.ema else None
    state = TrainState()

    if resume is not None:
        state = restore_training(resume, tc.epochs, model, ema, optimizer, scaler, criterion, device)
        log(f"Resuming {resume} after epoch {state.epoch + 1}/{tc.epochs}")
    # wrapped after the state is loaded: DDP broadcasts rank 0's weights when it is built
    train_model = training_model(_data_parallel(model, device) if dist_ctx.enabled else model, tc)

    batches_per_epoch = len(parts.train_loader)
    schedule = LRSchedule(
        epochs=tc.epochs, lrf=tc.lrf, schedule=tc.schedule,
        warmup_iters=warmup_iterations(tc.warmup_epochs, batches_per_epoch),
        warmup_bias_lr=tc.warmup_bias_lr, warmup_momentum=tc.warmup_momentum, momentum=tc.momentum,
    )
    writer = _tensorboard(run_dir) if main else _NullWriter()
    guard = NonFiniteGuard(max_bad_steps=tc.max_bad_steps,
                           save_dir=run_dir if main else run_dir / f"rank{dist_ctx.rank}")
    final_stats: dict[str, float] = dict(state.metrics.get("coco", {}))
    time_before = float(state.metrics.get("train_time_s", 0.0))
    if main:
        truncate_history(run_dir / "history.jsonl", last_epoch=state.epoch + 1)
    t0 = time.time()
    first_epoch = state.epoch + 1
    try:
        for epoch in range(first_epoch, tc.epochs):
            t_epoch, skipped_before, amp_before = time.time(), guard.skipped, guard.amp_skipped
            seed_everything(tc.seed + epoch, deterministic=tc.deterministic)
            parts.set_epoch(epoch)
            means = train_one_epoch(
                train_model, criterion, parts.train_loader, optimizer, scaler, ema, device, epoch, schedule,
                accumulate, tc.grad_clip, amp_dtype, channels_last, writer=writer, progress=progress, guard=guard,
                world_size=dist_ctx.world_size,
            )
            distributed.broadcast_buffers(model)  # rank 0's running statistics everywhere (no-op in one process)
            if ema is not None:
                distributed.broadcast_buffers(ema.module)
            terms = {k: v for k, v in means.items() if not k.startswith("assign/")}
            assign = {k.removeprefix("assign/"): v for k, v in means.items() if k.startswith("assign/")}
            if assign and epoch == first_epoch:  # the first epoch this process trains
                log(format_assignment_table(assign, f"assignment over epoch {epoch + 1} ({criterion.assigner!r})"))
            for k, v in terms.items():
                writer.add_scalar(f"train/{k}", v, epoch)
            for k, v in assign.items():
                writer.add_scalar(f"assign/{k}", v, epoch)
            last_epoch = epoch == tc.epochs - 1
            evaluated = None
            if (epoch + 1) % tc.eval_interval == 0 or last_epoch:
                eval_model = ema.module if ema is not None else model
                detections = run_dir / "detections.json" if last_epoch else None
                evaluated = evaluate(eval_model, coder, parts.val_loader, parts.val_dataset, cfg.eval, device,
                                     progress=progress, detections_path=detections)
                final_stats = evaluated
                for k, v in evaluated.items():
                    writer.add_scalar(f"metrics/{k}", v, epoch)
            state.epoch = epoch
            elapsed = time_before + time.time() - t0
            amp_skipped = guard.amp_skipped - amp_before
            log(epoch_line(epoch, tc.epochs, terms, time.time() - t_epoch, evaluated, guard.skipped - skipped_before,
                           amp_skipped), flush=True)
            if scaler.is_enabled():
                writer.add_scalar("train/amp_skipped_steps", amp_skipped, epoch)
            state.metrics = {"train": terms, "coco": final_stats, "train_time_s": elapsed}
            if main:
                append_history(run_dir / "history.jsonl", {
                    "epoch": epoch + 1, "train": terms, "assign": assign, "coco": evaluated,
                    "lr": [g["lr"] for g in optimizer.param_groups], "time_s": elapsed,
                    "skipped_steps": guard.skipped - skipped_before, "amp_skipped_steps": amp_skipped})
            fit_value = fitness(final_stats) if final_stats else -1.0
            is_best = fit_value > state.best_fitness
            state.best_fitness = max(state.best_fitness, fit_value)
            ckpt = training_checkpoint(state, cfg, model, ema, optimizer, scaler, criterion,
                                       list(parts.val_dataset.names))
            if main:
                save_checkpoint(run_dir / "last.pt", ckpt)
                if is_best and final_stats:
                    save_checkpoint(run_dir / "best.pt", ckpt)
            distributed.barrier()  # no rank starts the next epoch before the checkpoint of this one exists
            if on_epoch_end is not None:
                on_epoch_end(epoch, state.metrics)
    finally:
        writer.close()
    result = {"coco": final_stats, "train": state.metrics.get("train", {}),
              "train_time_s": state.metrics.get("train_time_s", 0.0),
              "epochs": tc.epochs, "device": str(device), "run_dir": str(run_dir),
              "world_size": dist_ctx.world_size}
    if main:
        write_results_json(run_dir / "results.json", final_stats,
                           extra={k: v for k, v in result.items() if k != "coco"})
    if final_stats:
        log(format_coco_table(final_stats))
    log(f"Results written to {run_dir}")
    return result


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` (its weights are rank 0's from here on)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir))


class _NullWriter:
    """What ranks other than 0 log to."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _quiet(*args, **kwargs) -> None:
    """``print`` on ranks other than 0."""
