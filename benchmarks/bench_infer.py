#!/usr/bin/env python
"""Inference + NMS throughput at batch 32: images per second through ``detector.engine.evaluate.predict``.

The evaluation loader's batches (letterboxed validation images, ``eval.batch_size``) are collated once; the timed
loop moves each batch to the device and runs ``predict`` (forward, box decoding, score threshold
``eval.conf_thres``, NMS, ``eval.max_det``), as ``evaluate`` does, over every batch ``--rounds`` times after one
untimed round. The forward pass alone is timed the same way, so the table also gives the post-processing's share.

NMS's cost depends on how many candidates pass the score threshold: an untrained model passes almost none at the
default 0.001, so give trained weights (``--weights``, classes matching the dataset) for a representative figure;
the table reports the detections kept per image.

    python benchmarks/bench_infer.py                                 # n, 320 and 640 px, coco128 val, batch 32
    python benchmarks/bench_infer.py --set data.dataset=bccd --img-size 320 \\
        --weights runs/ablate/yolov8_vs_yolov5_bccd/yolov5_ciou/seed0/best.pt
"""
from __future__ import annotations

from itertools import islice

import torch

from _common import base_parser, report, row, setup, timed
from detector import build
from detector.config import load_config
from detector.engine.start import load_weights
from detector.engine.evaluate import predict


def bench_predict(args, device: torch.device, size: str, img: int) -> dict:
    """Build model and batches for (size, img), time ``predict`` and the forward pass; return one result row."""
    cfg = load_config(args.preset, [f"model.size={size}", f"data.img_size={img}", "data.workers=0",
                                    f"eval.batch_size={args.batch_size}", *args.set])
    dataset = build.build_dataset(cfg, cfg.eval.split)
    model = build.build_model(cfg, len(dataset.names)).to(device).eval()
    if args.weights:
        load_weights(model, args.weights, list(dataset.names))
    coder = build.build_coder(cfg)
    batches = [b.images for b in islice(build.build_loader(cfg, dataset, train=False), args.max_batches)]
    images = sum(b.shape[0] for b in batches)
    autocast = dict(device_type=device.type, enabled=args.amp and device.type == "cuda")
    kept = []

    def infer(keep: bool = False) -> None:
        for b in batches:
            with torch.autocast(**autocast):
                dets = predict(model, coder, b.to(device, non_blocking=True), cfg.eval)
            if keep:
                kept.extend(len(d) for d in dets)

    @torch.no_grad()
    def forward() -> None:
        for b in batches:
            with torch.autocast(**autocast):
                model(b.to(device, non_blocking=True))

    infer(keep=True)  # warm-up, and the detections kept
    predict_s = timed(lambda: [infer() for _ in range(args.rounds)], device) / (args.rounds * images)
    forward()
    forward_s = timed(lambda: [forward() for _ in range(args.rounds)], device) / (args.rounds * images)
    config = (f"{args.preset} {size}, {img} px, batch {cfg.eval.batch_size}, {images} {cfg.eval.split} images "
              f"x {args.rounds}, conf {cfg.eval.conf_thres}, NMS {cfg.eval.nms} {cfg.eval.iou_thres}"
              + (", amp" if autocast["enabled"] else "")
              + (f", weights {args.weights}" if args.weights else ", untrained"))
    return row("inference + NMS", config, device, images_per_s=1 / predict_s, ms_per_image=1000 * predict_s,
               forward_ms_per_image=1000 * forward_s, postprocess_share=1 - forward_s / predict_s,
               detections_per_image=sum(kept) / max(len(kept), 1))


def main(argv: list[str] | None = None) -> list[dict]:
    p = base_parser(__doc__)
    p.add_argument("--preset", default="yolov5_ciou", help="config name or path (default yolov5_ciou)")
    p.add_argument("--sizes", nargs="+", default=["n"])
    p.add_argument("--img-size", type=int, nargs="+", default=[320, 640])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-batches", type=int, default=4, help="validation batches used (default 4: coco128's 128)")
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the batches (default 3)")
    p.add_argument("--weights", default=None, help="a checkpoint (its EMA weights) whose classes match the dataset")
    p.add_argument("--amp", action="store_true", help="autocast on CUDA (evaluate itself runs float32)")
    args = p.parse_args(argv)
    if args.smoke:
        args.img_size, args.batch_size, args.max_batches, args.rounds = [64], 2, 1, 1
    device = setup(args)
    rows = [bench_predict(args, device, size, img) for size in args.sizes for img in args.img_size]
    report(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
