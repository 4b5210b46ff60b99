#!/usr/bin/env python
"""Training epoch wall time: ``train_one_epoch`` over the whole training loader, as ``fit`` runs it.

The parts are built from the config by ``detector.build.build_all`` and set up as ``fit`` sets them up
(optimizer, EMA, LR schedule with warm-up, gradient accumulation to ``train.nbs``, autocast and channels_last);
before each epoch the generators are re-seeded from ``(train.seed, epoch)`` and the loader re-seeded, as ``fit``
does. Only the ``train_one_epoch`` call is timed: building the parts, checkpoints, evaluation and logging are not.
The loader's workers start in the first epoch and persist, so the first epoch also carries their start-up; the
figure is the median over epochs, each epoch is listed. The schedule is the config's (``train.epochs`` as set):
the epochs timed are the first ones of that run.

    python benchmarks/bench_epoch.py                              # coco128, n, 320 px, batch 16, 2 workers, 3 epochs
    python benchmarks/bench_epoch.py --device cuda --size s --img-size 640 --batch-size 64 --workers 16
"""
from __future__ import annotations

import statistics

from _common import base_parser, precision_flags, report, row, run_epoch, setup, step_parts, timed
from detector import build
from detector.config import load_config
from detector.engine.rng import seed_everything


def main(argv: list[str] | None = None) -> list[dict]:
    p = base_parser(__doc__)
    p.add_argument("--preset", default="yolov5_ciou", help="config name or path (default yolov5_ciou)")
    p.add_argument("--dataset", default="coco128", help="data.dataset (default coco128)")
    p.add_argument("--size", default="n")
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="epochs timed, one by one (default 3)")
    args = p.parse_args(argv)
    if args.smoke:
        args.img_size, args.batch_size, args.workers, args.epochs = 64, 4, 0, 1
        args.set = ["data.max_images=8", *args.set]
    device = setup(args)
    cfg = load_config(args.preset, [f"data.dataset={args.dataset}", f"model.size={args.size}",
                                    f"data.img_size={args.img_size}", f"train.batch_size={args.batch_size}",
                                    f"data.workers={args.workers}", *args.set])
    tc = cfg.train
    if args.epochs > tc.epochs:
        raise SystemExit(f"bench_epoch: --epochs {args.epochs} is more than train.epochs={tc.epochs} of the config")
    seed_everything(tc.seed, deterministic=tc.deterministic)
    parts = build.build_all(cfg, device)
    sp = step_parts(cfg, parts, device, batches_per_epoch=len(parts.train_loader))
    seconds = []
    for epoch in range(args.epochs):
        seed_everything(tc.seed + epoch, deterministic=tc.deterministic)
        parts.set_epoch(epoch)
        seconds.append(timed(lambda: run_epoch(sp, parts.train_loader, epoch), device))
    flags = precision_flags(sp)
    config = (f"{args.preset} {args.size}, {args.dataset} train ({len(parts.train_dataset)} images), "
              f"{cfg.data.img_size} px, batch {tc.batch_size}, nbs {tc.nbs}, {cfg.data.workers} workers"
              + (f", {flags}" if flags else "")
              + (f", malloc {args.malloc}" if device.type == "cpu" else "") + f"; median of {args.epochs} epochs")
    median = statistics.median(seconds)
    rows = [row("train epoch", config, device, seconds=median, images_per_s=len(parts.train_dataset) / median,
                batches=len(parts.train_loader), per_epoch_s=" / ".join(f"{s:.2f}" for s in seconds))]
    report(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
