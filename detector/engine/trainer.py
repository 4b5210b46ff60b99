"""The training loop: read it top to bottom.

``fit(cfg)`` builds every part from the config (``detector.build``), then for each epoch runs
``train_one_epoch`` and, every ``train.eval_interval`` epochs and at the end, ``evaluate`` with the EMA
weights; it writes ``last.pt`` / ``best.pt`` atomically, TensorBoard scalars and ``results.json``.

Reproducibility: every epoch starts by re-seeding all generators from ``(train.seed, epoch)``, so the
work of an epoch depends only on what the checkpoint holds (weights, EMA, optimizer, scaler, epoch).
That is what makes a resumed run reach the same weights as an uninterrupted one on the CPU.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from detector import build
from detector.assigners.stats import assignment_stats, format_assignment_table
from detector.config import Config, config_to_dict, save_config
from detector.errors import ConfigError
from detector.data import scale_boxes_to_original
from detector.engine.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from detector.engine.ema import ModelEMA
from detector.engine.nonfinite import NonFiniteGuard
from detector.engine.start import check_training_data, load_weights
from detector.engine.optim import LRSchedule, accumulate_steps, apply_lr, build_optimizer, scaled_weight_decay, warmup_iterations
from detector.engine.rng import get_rng_state, seed_everything, set_rng_state
from detector.evaluation.coco import detections_to_coco, evaluate_coco, format_coco_table, write_results_json
from detector.ops.nms import postprocess_scores
from detector.ops.peaks import peak_detections
from detector.structures import detection_scores


def fitness(stats: dict[str, float]) -> float:
    """YOLOv5's model-selection score: 0.1 * mAP50 + 0.9 * mAP50-95."""
    return 0.1 * stats.get("mAP50", 0.0) + 0.9 * stats.get("mAP", 0.0)


def select_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise torch.device(name) (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def next_run_dir(out_dir: str | Path, name: str) -> Path:
    """runs/train/exp, then exp2, exp3, ... (never overwrites an earlier run)."""
    root = Path(out_dir)
    candidate, k = root / name, 2
    while candidate.exists():
        candidate, k = root / f"{name}{k}", k + 1
    return candidate


@dataclass
class TrainState:
    """What changes during a run and goes into every checkpoint."""

    epoch: int = -1  # last completed epoch
    best_fitness: float = -1.0
    metrics: dict = field(default_factory=dict)


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
    amp: bool,
    channels_last: bool,
    writer=None,
    progress: bool = True,
    guard: NonFiniteGuard | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss term (per image, as logged by YOLOv5) and of each
    assignment statistic (``assign/<name>``, :func:`detector.assigners.stats.assignment_stats`) over the finite steps.

    ``guard`` checks every step's loss terms after the backward pass and before the optimizer step: a non-finite
    step is skipped together with the gradients accumulated since the last optimizer step, or the run stops
    (:class:`~detector.engine.nonfinite.NonFiniteLossError`); default: stop at the first, save nothing."""
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
        with torch.autocast(device_type=device.type, enabled=amp):
            outputs = model(images)
        losses = criterion(_float32(outputs), targets)
        scaler.scale(losses["loss"]).backward()
        terms = {k: float(v.detach()) for k, v in losses.items()}  # the step's one device sync
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
        if (i + 1) % accumulate == 0 or i == num_batches - 1:
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
            scaler.step(optimizer)
            scaler.update()
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
    means.update({f"assign/{k}": float(v) / max(good, 1) for k, v in assign_sums.items()})
    return means


def _float32(outputs):
    """Loss terms are computed in float32 even when the forward pass ran under autocast."""
    for name in ("box", "cls", "obj", "box_log_var", "quality"):
        t = getattr(outputs, name, None)
        if t is not None and t.dtype != torch.float32:
            setattr(outputs, name, t.float())
    if getattr(outputs, "one_to_one", None) is not None:
        _float32(outputs.one_to_one)
    return outputs


@torch.no_grad()
def predict(model: nn.Module, coder, images: Tensor, eval_cfg) -> list[Tensor]:
    """images (Tensor[B,3,H,W]) -> B tensors [k, 6] = (x1, y1, x2, y2, score, class) in input pixels."""
    outputs = _float32(model(images))
    boxes = coder.decode(outputs.box, outputs.priors)  # (B, P, 4)
    if eval_cfg.nms == "peaks":  # CenterNet: local maxima of the class maps, no NMS
        return peak_detections(boxes, detection_scores(outputs), outputs.priors.level_shapes[0],
                               conf_thres=eval_cfg.conf_thres, max_det=eval_cfg.max_det)
    log_var = outputs.box_log_var
    if log_var is not None:  # grid-cell units -> pixels, so variance voting compares boxes across levels
        log_var = log_var + 2 * torch.log(outputs.priors.strides)[:, None]  # (B, P, 4)
    return postprocess_scores(
        boxes,
        detection_scores(outputs),  # (B, P, C) as the head was trained: sigmoid or softmax, x obj, centerness
        conf_thres=eval_cfg.conf_thres,
        iou_thres=eval_cfg.iou_thres,
        max_det=eval_cfg.max_det,
        method=eval_cfg.nms,
        box_log_var=log_var,
        variance_voting=eval_cfg.variance_voting,
    )


@torch.no_grad()
def evaluate(model: nn.Module, coder, loader, dataset, eval_cfg, device: torch.device, progress: bool = True,
             detections_path: Path | None = None) -> dict[str, float]:
    """COCO mAP (pycocotools) of ``model`` on ``loader``'s images; boxes mapped back to original pixels.

    ``detections_path``: also write ``{"image_ids": [...], "detections": [COCO result dicts]}`` there (JSON),
    so the score can be recomputed, or bootstrapped over images, without the model."""
    model.eval()
    results, image_ids = [], []
    for batch in _progress(loader, total=len(loader), desc="eval", enabled=progress):
        dets = predict(model, coder, batch.images.to(device), eval_cfg)
        dets = [d.cpu() for d in dets]
        for d, meta in zip(dets, batch.metas):
            d[:, :4] = scale_boxes_to_original(d[:, :4], meta)
        ids = [meta.image_id for meta in batch.metas]
        results += detections_to_coco(dets, ids, dataset.cat_ids)
        image_ids += ids
    if detections_path is not None:
        Path(detections_path).write_text(json.dumps({"image_ids": image_ids, "detections": results}))
    return evaluate_coco(dataset.coco_gt(), results, image_ids=image_ids, backend=eval_cfg.backend)


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
    """
    tc = cfg.train
    if resume is not None and weights is not None:
        raise ValueError("give resume (continue a run) or weights (start a new run from them), not both")
    device = select_device(tc.device)
    check_training_data(cfg)
    seed_everything(tc.seed, deterministic=tc.deterministic)
    if resume is not None:
        run_dir = Path(resume).parent
    run_dir = Path(run_dir) if run_dir is not None else next_run_dir(tc.out_dir, tc.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    parts = build.build_all(cfg, device)
    model, criterion, coder = parts.model, parts.criterion, parts.coder
    cuda = device.type == "cuda"
    amp, channels_last = tc.amp and cuda, tc.channels_last and cuda
    if weights is not None:
        load_weights(model, weights, list(parts.train_dataset.names))
        print(f"Starting from the weights of {weights}")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    accumulate = accumulate_steps(tc.batch_size, tc.nbs)
    weight_decay = scaled_weight_decay(tc.weight_decay, tc.batch_size, accumulate, tc.nbs)
    optimizer = build_optimizer(model, tc.optimizer, lr=tc.lr0, momentum=tc.momentum, weight_decay=weight_decay, nesterov=tc.nesterov)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    ema = ModelEMA(model, decay=tc.ema_decay, tau=tc.ema_tau) if tc.ema else None
    state = TrainState()

    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        if ckpt["epoch"] + 1 > tc.epochs:
            raise ConfigError("train.epochs", f"{resume} has already trained {ckpt['epoch'] + 1} epochs, more than "
                                              f"train.epochs={tc.epochs}: a resumed run can only be extended")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict({"module": ckpt["ema"], "updates": ckpt["ema_updates"]})
        if ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        if hasattr(criterion, "load_state_dict"):  # stateful losses (wiou, ghm); absent in older checkpoints
            criterion.load_state_dict(ckpt.get("criterion", {}))
        state = TrainState(epoch=ckpt["epoch"], best_fitness=ckpt["best_fitness"], metrics=ckpt.get("metrics", {}))
        set_rng_state(ckpt["rng"])
        print(f"Resuming {resume} after epoch {state.epoch + 1}/{tc.epochs}")

    batches_per_epoch = len(parts.train_loader)
    schedule = LRSchedule(
        epochs=tc.epochs, lrf=tc.lrf, schedule=tc.schedule,
        warmup_iters=warmup_iterations(tc.warmup_epochs, batches_per_epoch),
        warmup_bias_lr=tc.warmup_bias_lr, warmup_momentum=tc.warmup_momentum, momentum=tc.momentum,
    )
    writer = _tensorboard(run_dir)
    guard = NonFiniteGuard(max_bad_steps=tc.max_bad_steps, save_dir=run_dir)
    final_stats: dict[str, float] = dict(state.metrics.get("coco", {}))
    time_before = float(state.metrics.get("train_time_s", 0.0))
    truncate_history(run_dir / "history.jsonl", last_epoch=state.epoch + 1)
    t0 = time.time()
    first_epoch = state.epoch + 1
    try:
        for epoch in range(first_epoch, tc.epochs):
            t_epoch, skipped_before = time.time(), guard.skipped
            seed_everything(tc.seed + epoch, deterministic=tc.deterministic)
            parts.set_epoch(epoch)
            means = train_one_epoch(
                model, criterion, parts.train_loader, optimizer, scaler, ema, device, epoch, schedule,
                accumulate, tc.grad_clip, amp, channels_last, writer=writer, progress=progress, guard=guard,
            )
            terms = {k: v for k, v in means.items() if not k.startswith("assign/")}
            assign = {k.removeprefix("assign/"): v for k, v in means.items() if k.startswith("assign/")}
            if assign and epoch == first_epoch:  # the first epoch this process trains
                print(format_assignment_table(assign, f"assignment over epoch {epoch + 1} ({criterion.assigner!r})"))
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
            print(epoch_line(epoch, tc.epochs, terms, time.time() - t_epoch, evaluated, guard.skipped - skipped_before),
                  flush=True)
            state.metrics = {"train": terms, "coco": final_stats, "train_time_s": elapsed}
            append_history(run_dir / "history.jsonl", {
                "epoch": epoch + 1, "train": terms, "assign": assign, "coco": evaluated,
                "lr": [g["lr"] for g in optimizer.param_groups], "time_s": elapsed,
                "skipped_steps": guard.skipped - skipped_before})
            fit_value = fitness(final_stats) if final_stats else -1.0
            is_best = fit_value > state.best_fitness
            state.best_fitness = max(state.best_fitness, fit_value)
            ckpt = {
                "model": model.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "ema_updates": ema.updates if ema is not None else 0,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if amp else None,
                "criterion": criterion.state_dict() if hasattr(criterion, "state_dict") else {},
                "epoch": epoch,
                "best_fitness": state.best_fitness,
                "config": config_to_dict(cfg),
                "metrics": state.metrics,
                "version": CHECKPOINT_VERSION,
                "rng": get_rng_state(),
                "num_classes": parts.num_classes,
                "names": list(parts.val_dataset.names),
            }
            save_checkpoint(run_dir / "last.pt", ckpt)
            if is_best and final_stats:
                save_checkpoint(run_dir / "best.pt", ckpt)
            if on_epoch_end is not None:
                on_epoch_end(epoch, state.metrics)
    finally:
        writer.close()
    result = {"coco": final_stats, "train": state.metrics.get("train", {}),
              "train_time_s": state.metrics.get("train_time_s", 0.0),
              "epochs": tc.epochs, "device": str(device), "run_dir": str(run_dir)}
    write_results_json(run_dir / "results.json", final_stats, extra={k: v for k, v in result.items() if k != "coco"})
    if final_stats:
        print(format_coco_table(final_stats))
    print(f"Results written to {run_dir}")
    return result


def epoch_line(epoch: int, epochs: int, terms: dict[str, float], seconds: float, evaluated: dict | None,
               skipped: int = 0) -> str:
    """The one line printed after each epoch: ``epoch 3/10  lbox 0.0512  lobj 0.0301  12.4 s  mAP50-95 0.1234
    mAP50 0.2345`` (mAP only when evaluated; ``skipped k`` when k non-finite steps were skipped)."""
    parts = [f"epoch {epoch + 1}/{epochs}"] + [f"{k} {v:.4f}" for k, v in terms.items()] + [f"{seconds:.1f} s"]
    if skipped:
        parts.append(f"skipped {skipped}")
    if evaluated is not None:
        parts += [f"mAP50-95 {evaluated['mAP']:.4f}", f"mAP50 {evaluated['mAP50']:.4f}"]
    return "  ".join(parts)


def append_history(path: Path, record: dict) -> None:
    """One JSON line per epoch: loss terms, COCO stats when evaluated (else null), learning rates, time."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_history(path: Path, last_epoch: int) -> None:
    """Keep the lines of epochs <= ``last_epoch`` (those the checkpoint being resumed has seen)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= last_epoch]
    path.write_text("".join(ln + "\n" for ln in lines))


def read_history(path: str | Path) -> list[dict]:
    """The records ``append_history`` wrote, in epoch order."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir))
