"""Time assignment + loss (forward and backward) per preset, on s-size head outputs at 640 px, batch 16 and 64.

What is timed is what a training step spends between the head and the optimizer: the head's per-level raw outputs
(random ``(B, A, K, H, W)`` leaves, ``requires_grad``, seen through the ``(B, A, H, W, K)`` view the head returns)
are flattened into HeadOutputs, the preset's criterion runs (coder, assigner, sampler,
loss terms) on the real coco128 boxes of the first ``B`` images letterboxed to 640, and the total is backpropagated
to the level outputs. The model itself is not run. Figures are medians over ``--repeat`` runs after one warm-up.

    python benchmarks/bench_assign.py [--batch 16 64] [--threads 1] [--repeat 5] [--presets yolov5_ciou fcos ...]
        [--img-size 640] [--json PATH] [--smoke]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _common import add_malloc_option, apply_malloc, row, write_json
from yolov5_loss import YOLOv5ComputeLoss, normalised_xywh
from detector import build
from detector.config import load_config
from detector.data.coco import letterboxed_coco_targets
from detector.models.heads.dual import DualHead, DualLevels

COCO128_JSON = Path(__file__).resolve().parents[1] / "data/coco128/annotations/instances_train2017.json"

PRESETS = ["yolov5_ciou", "yolov3", "yolov2", "ssd", "rpn", "retinanet_focal", "fcos", "atss", "yolox_simota",
           "yolov8_tal", "yolo_e2e", "centernet"]


def time_preset(name: str, batch: int, repeat: int, img: int = 640, num_classes: int = 80) -> float:
    cfg = load_config(name, [f"data.img_size={img}", "model.size=s"])
    model = build.build_model(cfg, num_classes)
    criterion = build.build_criterion(cfg, num_classes)
    build.link_class_rows(model, criterion)  # as build_all does
    head, generator = model.head, model.prior_generator
    strides = model.strides
    shapes = [(img // s, img // s) for s in strides]
    priors = generator(shapes, "cpu", torch.float32)
    dual = isinstance(head, DualHead)  # NMS-free training: both heads' outputs
    raw = [(torch.randn(batch, a, head.layout.size, h, w) * 0.5).requires_grad_()
           for _ in range(1 + dual) for a, h, w in priors.level_shapes]  # the convolutions' layout
    targets = letterboxed_coco_targets(COCO128_JSON, batch, img)

    def step() -> None:
        levels = [r.permute(0, 1, 3, 4, 2) for r in raw]  # (B, A, H, W, K), as the heads' forward returns
        if dual:
            n = len(priors.level_shapes)
            levels = DualLevels(levels[:n], levels[n:])
        criterion(head.flatten(levels, priors), targets)["loss"].backward()
        for r in raw:
            r.grad = None

    return median_ms(step, repeat)


def time_yolov5_reference(batch: int, repeat: int, img: int = 640, num_classes: int = 80) -> float:
    """The same measurement for YOLOv5's own ComputeLoss (re-derived in yolov5_loss.py, equal to the YOLOv5 preset's
    loss and gradient): from the contiguous ``(B, A, H, W, K)`` tensors YOLOv5's Detect hands it, as the issue timed."""
    cfg = load_config("yolov5_ciou", [f"data.img_size={img}", "model.size=s"])
    anchors = torch.tensor(cfg.model.anchors, dtype=torch.float32).view(len(cfg.model.strides), -1, 2)
    loss = YOLOv5ComputeLoss(anchors, cfg.model.strides, num_classes, img)
    p = [(torch.randn(batch, anchors.shape[1], img // s, img // s, 5 + num_classes) * 0.5).requires_grad_()
         for s in cfg.model.strides]
    targets = normalised_xywh(letterboxed_coco_targets(COCO128_JSON, batch, img), img)

    def step() -> None:
        loss(p, targets)[0].sum().backward()
        for t in p:
            t.grad = None
    return median_ms(step, repeat)


def median_ms(step, repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``step`` after one untimed call, in ms."""
    step()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--no-yolov5", action="store_true",
                        help="leave out the reference row: YOLOv5's own ComputeLoss (yolov5_loss.py)")
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON to PATH")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of the same code (CI)")
    add_malloc_option(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.repeat, args.img_size = [2], 1, 128
        args.presets = [p for p in args.presets if p in ("yolov5_ciou", "yolov8_tal")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    apply_malloc(args, torch.device("cpu"))
    print(f"assignment + loss, forward + backward, s-size outputs at {args.img_size} px, {args.threads} thread(s), "
          f"median of {args.repeat}, malloc {args.malloc}")
    print("| preset | " + " | ".join(f"batch {b} (ms)" for b in args.batch) + " |")
    print("|---|" + "---:|" * len(args.batch))
    rows = []
    if not args.no_yolov5:
        ms = {f"batch_{b}_ms": time_yolov5_reference(b, args.repeat, args.img_size) for b in args.batch}
        print("| YOLOv5's ComputeLoss (reference) | " + " | ".join(f"{v:,.0f}" for v in ms.values()) + " |", flush=True)
        rows.append(row("assignment + loss", f"YOLOv5 ComputeLoss (benchmarks/yolov5_loss.py), s outputs at "
                                             f"{args.img_size} px, malloc {args.malloc}", torch.device("cpu"), **ms))
    for name in args.presets:
        ms = {f"batch_{b}_ms": time_preset(name, b, args.repeat, args.img_size) for b in args.batch}
        print(f"| {name} | " + " | ".join(f"{v:,.0f}" for v in ms.values()) + " |", flush=True)
        rows.append(row("assignment + loss", f"{name}, s outputs at {args.img_size} px, malloc {args.malloc}",
                        torch.device("cpu"), **ms))
    if args.json:
        write_json(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
