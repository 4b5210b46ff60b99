#!/usr/bin/env python
"""Train a detector from a config.

    python tools/train.py --cfg yolov5_ciou.yaml                       # bare name: configs/yolov5_ciou.yaml
    python tools/train.py --cfg yolov5_ciou --set loss.box=giou train.epochs=50
    python tools/train.py --resume runs/train/exp/last.pt              # continue an interrupted run
    python tools/train.py --resume runs/train/exp/last.pt --set train.epochs=300   # extend a run
    python tools/train.py --cfg yolov5_ciou --weights runs/train/exp/best.pt       # a new run from trained weights
    torchrun --nproc_per_node 4 tools/train.py --cfg yolov5_ciou --set train.batch_size=64  # 4 processes, DDP

--resume uses the config stored in the checkpoint; --set may change only train.epochs, train.eval_interval,
train.device, data.workers, data.worker_timeout and eval.batch_size there. A larger train.epochs extends the run:
the epochs still to train follow the learning-rate schedule of a run planned with the new count from the start (the epochs already
trained keep the rates they had), and close_mosaic counts from the new end. --weights starts a new run (fresh
optimizer, epoch 0) from a checkpoint's weights (its EMA weights when it has them); the class names must match.
Under torchrun, train.batch_size is the global batch (each rank takes batch_size / N) and rank 0 writes the run
directory; see the README's "Several GPUs or machines".
Exit codes: 0 done, 2 an error in the config, the data, a checkpoint, or a loss that went NaN / inf.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config import load_config  # noqa: E402
from detector.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from detector.engine.nonfinite import NonFiniteLossError  # noqa: E402
from detector.engine.start import resume_config  # noqa: E402
from detector.engine.trainer import fit  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", help="config file: a path, or a bare name resolved against configs/")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. loss.box=giou train.epochs=50")
    p.add_argument("--resume", metavar="LAST_PT", help="continue the run that wrote this last.pt (its stored config is used)")
    p.add_argument("--weights", metavar="CKPT", help="start a new run from this checkpoint's weights (epoch 0)")
    p.add_argument("--run-dir", help="write the run here instead of train.out_dir/train.name{,2,3,...}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, one line per epoch (readable CI logs)")
    args = p.parse_args(argv)
    if not args.cfg and not args.resume:
        p.error("give --cfg (a config to train) or --resume (a last.pt to continue)")
    if args.resume and args.weights:
        p.error("--weights starts a new run and --resume continues one: give one of them")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            if args.cfg:
                print("note: --resume uses the config stored in the checkpoint; --cfg is ignored", file=sys.stderr)
            cfg = resume_config(load_checkpoint(args.resume)["config"], args.set, source=str(args.resume))
        else:
            cfg = load_config(args.cfg, args.set)
        fit(cfg, run_dir=args.run_dir, resume=args.resume, weights=args.weights, progress=not args.no_progress)
    except (ConfigError, DatasetError, CheckpointError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
