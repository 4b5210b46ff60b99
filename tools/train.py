#!/usr/bin/env python
"""Train a detector from a config.

    python tools/train.py --cfg yolov5_ciou.yaml                       # bare name: configs/yolov5_ciou.yaml
    python tools/train.py --cfg yolov5_ciou --set loss.box=giou train.epochs=50
    python tools/train.py --resume runs/train/exp/last.pt              # continue an interrupted run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config import config_from_dict, load_config  # noqa: E402
from detector.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from detector.engine.trainer import fit  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", help="config file: a path, or a bare name resolved against configs/")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. loss.box=giou train.epochs=50")
    p.add_argument("--resume", metavar="LAST_PT", help="continue the run that wrote this last.pt (its stored config is used)")
    p.add_argument("--run-dir", help="write the run here instead of train.out_dir/train.name{,2,3,...}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay readable in CI)")
    args = p.parse_args(argv)
    if not args.cfg and not args.resume:
        p.error("give --cfg (a config to train) or --resume (a last.pt to continue)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            if args.set or args.cfg:
                print("note: --resume uses the config stored in the checkpoint; --cfg/--set are ignored", file=sys.stderr)
            cfg = config_from_dict(load_checkpoint(args.resume)["config"], source=str(args.resume))
        else:
            cfg = load_config(args.cfg, args.set)
        fit(cfg, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
