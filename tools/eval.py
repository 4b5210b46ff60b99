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
from detector.config import config_from_dict  # noqa: E402
from detector.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from detector.engine.distributed import select_device  # noqa: E402
from detector.engine.evaluate import evaluate  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402
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
        ckpt = load_checkpoint(args.weights)
        options = {"data.dataset": args.data, "data.img_size": args.img_size, "data.max_images": args.max_images,
                   "eval.split": args.split, "eval.batch_size": args.batch_size, "eval.conf_thres": args.conf_thres,
                   "eval.iou_thres": args.iou_thres, "eval.nms": args.nms}
        cfg = config_from_dict(ckpt["config"], source=str(args.weights),  # the options checked as --set items are
                               overrides=[f"{k}={v}" for k, v in options.items() if v is not None])
        data, ev = cfg.data, cfg.eval
        device = select_device(args.device)
        dataset = build.build_dataset(cfg, ev.split)
        if len(dataset.names) != cfg_num_classes(ckpt):
            raise DatasetError(
                f"{cfg.data.dataset}: has {len(dataset.names)} classes but the checkpoint {args.weights} was trained "
                f"with {cfg_num_classes(ckpt)}"
            )
        model = build.build_model(cfg, num_classes=len(dataset.names)).to(device)
        use_ema = ckpt.get("ema") is not None and not args.no_ema
        model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
        loader = build.build_loader(cfg, dataset, train=False)
        stats = evaluate(model, build.build_coder(cfg), loader, dataset, ev, device)
    except (ConfigError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_coco_table(stats))
    out = Path(args.out) if args.out else Path(args.weights).parent / f"eval_{ev.split}.json"
    write_results_json(out, stats, extra={"weights": str(args.weights), "dataset": data.dataset, "split": ev.split,
                                          "img_size": data.img_size, "ema": use_ema})
    print(f"Results written to {out}")
    return 0


def cfg_num_classes(ckpt: dict) -> int:
    """Number of classes the checkpoint's model was built for (from its class-logit layer shapes)."""
    return int(ckpt["num_classes"])


if __name__ == "__main__":
    sys.exit(main())
