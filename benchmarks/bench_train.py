#!/usr/bin/env python
"""Training step time and throughput: what ``train_one_epoch`` spends per batch, after warm-up.

One step = everything the trainer does for a batch: move to the device, forward (autocast and channels_last as ``fit``
sets them), assignment + composite loss, backward, optimizer step, EMA update, the per-step loss sync and
assignment statistics. It runs through ``detector.engine.epoch.train_one_epoch`` itself, so it times the code
that trains. ``train.nbs`` is set to the batch size unless ``--set train.nbs=...`` says otherwise: an optimizer
step at every batch (YOLOv5 at batch 16 with nbs 64 steps the optimizer every fourth batch).

Batches (``--source``):
  fixed   real coco128 images, augmented by the config's pipeline and collated once before timing (up to 4
          distinct batches, cycled): the model's side alone, as in the issue's CPU comparison with YOLOv5;
  loader  drawn from the training loader while timing (``--workers`` processes): the whole pipeline, for the GPU
          throughput figure, where augmentation can be the bottleneck.

    python benchmarks/bench_train.py --sizes n --img-size 320 640 --batch-size 16          # CPU figure
    python benchmarks/bench_train.py --device cuda --sizes s --img-size 640 --batch-size 64 --source loader \\
        --workers 16 --steps 50 --warmup 10                                                 # GPU figure
    python benchmarks/bench_train.py --smoke --device cuda --preset yolov5_ciou yolov8_tal rpn   # a step of each, AMP
"""
from __future__ import annotations

from itertools import cycle

import torch

from _common import Take, base_parser, precision_flags, report, row, run_epoch, setup, step_parts, timed
from detector import build
from detector.config import load_config

DISTINCT_BATCHES = 4


def endless_batches(parts):
    """The training loader's batches, epoch after epoch (re-seeded per epoch as ``fit`` does)."""
    epoch = 0
    while True:
        parts.set_epoch(epoch)
        yield from parts.train_loader
        epoch += 1


def bench_step(args, device: torch.device, preset: str, size: str, img: int) -> dict:
    """Build the parts of ``preset`` for (size, img), warm up, time ``args.steps`` steps; return one result row."""
    overrides = [f"model.size={size}", f"data.img_size={img}", f"data.workers={args.workers}",
                 f"train.batch_size={args.batch_size}", f"train.nbs={args.batch_size}", *args.set]
    cfg = load_config(preset, overrides)
    parts = build.build_all(cfg, device)
    source = endless_batches(parts)
    if args.source == "fixed":  # collated before timing, then cycled
        source = cycle([next(source) for _ in range(min(DISTINCT_BATCHES, len(parts.train_loader)))])
    sp = step_parts(cfg, parts, device, batches_per_epoch=len(parts.train_loader))
    run_epoch(sp, Take(source, args.warmup), epoch=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(lambda: run_epoch(sp, Take(source, args.steps), epoch=1), device) / args.steps
    flags = precision_flags(sp)
    config = (f"{preset} {size}, {img} px, batch {cfg.train.batch_size}, nbs {cfg.train.nbs}, "
              f"{args.source} batches" + (f", {args.workers} workers" if args.source == "loader" else "")
              + (f", {flags}" if flags else "")
              + (f", malloc {args.malloc}" if device.type == "cpu" else "") + f"; {args.steps} steps after {args.warmup}")
    return row("train step", config, device,
               ms_per_step=1000 * seconds, images_per_s=cfg.train.batch_size / seconds,
               params=sum(p.numel() for p in parts.model.parameters()),
               peak_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)


def main(argv: list[str] | None = None) -> list[dict]:
    p = base_parser(__doc__)
    p.add_argument("--preset", nargs="+", default=["yolov5_ciou"],
                   help="config names or paths, one row each (default yolov5_ciou)")
    p.add_argument("--sizes", nargs="+", default=["n"], help="model sizes (default n)")
    p.add_argument("--img-size", type=int, nargs="+", default=[320, 640], help="input sizes (default 320 640)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="timed steps (default 8)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--source", choices=("fixed", "loader"), default="fixed")
    p.add_argument("--workers", type=int, default=0, help="loader processes (default 0)")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.img_size, args.batch_size, args.steps, args.warmup = ["n"], [64], 2, 1, 1
        args.set = ["data.max_images=4", *args.set]
    device = setup(args)
    rows = [bench_step(args, device, preset, size, img)
            for preset in args.preset for size in args.sizes for img in args.img_size]
    report(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
