#!/usr/bin/env python
"""Export a checkpoint to ONNX: detections with NMS (or top-k) inside the graph, or raw decoded boxes and scores.

    python tools/export.py --weights runs/train/exp/best.pt                         # -> best.onnx, detections
    python tools/export.py --weights best.pt --postprocess raw --out best_raw.onnx  # boxes [B,P,4], scores [B,P,C]
    python tools/export.py --weights best.pt --img-size 384 640 --check             # compare with onnxruntime

Input ``images`` float32 [B, 3, H, W] (RGB, 0..1, letterboxed to H x W; B dynamic). ``detections`` outputs
``detections`` [B, max_det, 6] = (x1, y1, x2, y2, score, class) and ``num_detections`` [B]; see detector/export.py.
Needs ``pip install -e ".[export]"`` (onnx; onnxruntime for --check).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from detector.engine.checkpoint import CheckpointError  # noqa: E402
from detector.errors import ConfigError  # noqa: E402
from detector.export import (  # noqa: E402
    DEFAULT_OPSET, OUTPUTS, export_module, export_onnx, model_from_checkpoint, onnxruntime_max_error,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a last.pt / best.pt written by tools/train.py")
    p.add_argument("--out", help="ONNX file (default: the weights' path with .onnx, _raw.onnx for raw)")
    p.add_argument("--postprocess", choices=sorted(OUTPUTS), default="detections",
                   help="detections: NMS (eval.nms iou) or top-k (eval.nms none) in the graph; raw: boxes and scores")
    p.add_argument("--img-size", type=int, nargs="+", metavar="N",
                   help="H [W] (multiples of 32); default data.img_size")
    p.add_argument("--conf-thres", type=float)
    p.add_argument("--iou-thres", type=float)
    p.add_argument("--max-det", type=int)
    p.add_argument("--nms", choices=["iou", "none"], help="default: eval.nms of the checkpoint's config")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    p.add_argument("--check", action="store_true", help="run the file with onnxruntime and compare with PyTorch")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model, cfg = model_from_checkpoint(args.weights, use_ema=not args.no_ema)
        size = args.img_size or [cfg.data.img_size]
        if len(size) > 2:
            raise ValueError(f"--img-size takes H or H W, got {size}")
        image_size = (size[0], size[-1])
        ev = cfg.eval
        ev = dataclasses.replace(
            ev, nms=args.nms or ev.nms, max_det=args.max_det or ev.max_det,
            conf_thres=ev.conf_thres if args.conf_thres is None else args.conf_thres,
            iou_thres=ev.iou_thres if args.iou_thres is None else args.iou_thres,
        )
        module = export_module(model, dataclasses.replace(cfg, eval=ev), image_size, args.postprocess)
        suffix = "_raw.onnx" if args.postprocess == "raw" else ".onnx"
        out = Path(args.out) if args.out else Path(args.weights).with_name(Path(args.weights).stem + suffix)
        export_onnx(module, out, image_size, args.postprocess, opset=args.opset)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Exported {args.postprocess} ({', '.join(OUTPUTS[args.postprocess])}) at {image_size[0]}x{image_size[1]} "
          f"to {out}")
    if args.check:
        images = torch.rand(2, 3, *image_size, generator=torch.Generator().manual_seed(1))
        errors = onnxruntime_max_error(out, module, images)
        print("onnxruntime vs PyTorch, max |difference|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
