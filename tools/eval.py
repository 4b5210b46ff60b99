#!/usr/bin/env python
"""Evaluate a checkpoint with COCO mAP (pycocotools).

    python tools/eval.py --weights runs/train/exp/best.pt                    # the dataset it was trained on, val split
    python tools/eval.py --weights best.pt --data bccd --split test --img-size 640
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import build  # noqa: E402
from detector.engine.checkpoint import CheckpointError  # noqa: E402
from detector.engine.distributed import select_device  # noqa: E402
from detector.engine.evaluate import evaluate  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402
from detector.inference import load_predictor  # noqa: E402
from detector.evaluation.coco import format_coco_table, write_results_json  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a last.pt / best.pt written by tools/train.py")
    p.add_argument("--data", help="dataset: bare name (data/<name>.yaml) or path; default: the one in the checkpoint's config")
    p.add_argument("--split", default=None, help="dataset split to evaluate (default: eval.split of the config, 'val')")
    p.add_argument("--img-size", type=int, help="input size (multiple of 32); default: data.img_size of the config")
    p.add_argument("--batch-size", type=int, help="default: eval.batch_size of the config")
    p.add_argument("--conf-thres", type=float)
    p.add_argument("--iou-thres", type=float)
    p.add_argument("--nms", choices=["iou", "diou"])
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA weights")
    p.add_argument("--out", help="results JSON path (default: <weights folder>/eval_<split>.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        options = {"data.dataset": args.data, "data.img_size": args.img_size, "data.max_images": args.max_images,
                   "eval.split": args.split, "eval.batch_size": args.batch_size, "eval.conf_thres": args.conf_thres,
                   "eval.iou_thres": args.iou_thres, "eval.nms": args.nms}
        predictor = load_predictor(args.weights, select_device(args.device), ema=not args.no_ema,
                                   overrides=[f"{k}={v}" for k, v in options.items() if v is not None])
        cfg = predictor.cfg
        data, ev = cfg.data, cfg.eval
        dataset = build.build_dataset(cfg, ev.split)
        if len(dataset.names) != len(predictor.names):
            raise DatasetError(
                f"{cfg.data.dataset}: has {len(dataset.names)} classes but the checkpoint {args.weights} was trained "
                f"with {len(predictor.names)}"
            )
        loader = build.build_loader(cfg, dataset, train=False)
        stats = evaluate(predictor.model, predictor.coder, loader, dataset, ev, predictor.device)
    except (ConfigError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_coco_table(stats))
    out = Path(args.out) if args.out else Path(args.weights).parent / f"eval_{ev.split}.json"
    write_results_json(out, stats, extra={"weights": str(args.weights), "dataset": data.dataset, "split": ev.split,
                                          "img_size": data.img_size, "ema": predictor.ema})
    print(f"Results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
