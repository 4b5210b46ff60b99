#!/usr/bin/env python
"""Detect objects in image files with a trained checkpoint; write the images with their boxes drawn.

    python tools/detect.py --weights runs/train/exp/best.pt --source data/coco128/images/train2017
    python tools/detect.py --weights best.pt --source photo.jpg --conf-thres 0.5 --save-txt --out runs/detect/a

Each image is letterboxed to the checkpoint's ``data.img_size`` (``--img-size`` to change it) and post-processed
with its ``eval`` settings, except the score threshold: ``--conf-thres`` (default 0.25, for pictures; evaluation
uses 0.001). Written to ``--out`` (default ``runs/detect/exp``, ``exp2``, ... never overwriting): every image with
its detections drawn, ``predictions.json`` (per file: box xyxy in the file's pixels, score, class, name) and, with
``--save-txt``, ``labels/<image stem>.txt`` in YOLO format with the score as a sixth column.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.engine.checkpoint import CheckpointError  # noqa: E402
from detector.engine.distributed import select_device  # noqa: E402
from detector.engine.trainer import next_run_dir  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402
from detector.inference import (as_records, draw_detections, image_files, load_predictor, read_images,  # noqa: E402
                                yolo_lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a last.pt / best.pt written by tools/train.py")
    p.add_argument("--source", required=True, help="an image file or a folder of images")
    p.add_argument("--img-size", type=int, help="input size (multiple of 32); default: data.img_size of the run")
    p.add_argument("--conf-thres", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--iou-thres", type=float, help="NMS threshold; default: eval.iou_thres of the run")
    p.add_argument("--max-det", type=int, help="detections per image; default: eval.max_det of the run")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA weights")
    p.add_argument("--save-txt", action="store_true", help="also write YOLO-format label files with scores")
    p.add_argument("--out", help="output folder (default: runs/detect/exp, exp2, ...)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        files = image_files(args.source)
        options = {"data.img_size": args.img_size, "eval.conf_thres": args.conf_thres,
                   "eval.iou_thres": args.iou_thres, "eval.max_det": args.max_det}
        predictor = load_predictor(args.weights, select_device(args.device), ema=not args.no_ema,
                                   overrides=[f"{k}={v}" for k, v in options.items() if v is not None])
        out = Path(args.out) if args.out else next_run_dir("runs/detect", "exp")
        (out / "labels" if args.save_txt else out).mkdir(parents=True, exist_ok=True)
        records, count = [], 0
        for start in range(0, len(files), args.batch_size):
            paths = files[start:start + args.batch_size]
            images = read_images(paths)
            for path, image, dets in zip(paths, images, predictor(images)):
                cv2.imwrite(str(out / path.name), draw_detections(image, dets, predictor.names))
                if args.save_txt:
                    lines = yolo_lines(dets, image.shape)
                    (out / "labels" / f"{path.stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
                records.append(as_records(path, dets, predictor.names))
                count += len(dets)
    except (ConfigError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (out / "predictions.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"{len(files)} images, {count} detections at conf > {predictor.cfg.eval.conf_thres}: written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
