#!/usr/bin/env python
"""COCO evaluation time: ``evaluate_coco`` with each ``eval.backend`` (pycocotools, faster_coco_eval) on the same
detections, on coco128's and BCCD's validation splits (BCCD when ``../shared/data/bccd`` exists).

Timed: the whole ``detector.evaluation.coco.evaluate_coco`` call that ``evaluate`` makes after inference (loading
the results, COCOeval's evaluate, accumulate and summarize), median of ``--repeat`` runs after one untimed run.
Each backend's 12 numbers are compared with pycocotools' (``max_abs_diff``).

Detections: by default, the ground truth made into what a detector at ``eval.conf_thres`` 0.001 returns (as many
boxes per image as ``eval.max_det``, 300): each object found with probability 0.85, jittered by 10% of its size,
given a wrong class with probability 0.1, and the rest of the image's ``--per-image`` boxes random background,
all with uniform random scores, seeded. ``--detections NAME=PATH`` uses a run's own instead: the JSON written by
``evaluate(..., detections_path=...)`` (``{"image_ids", "detections"}``), e.g. the ablation runs' detections.json.

    python benchmarks/bench_eval.py
    python benchmarks/bench_eval.py --datasets bccd \\
        --detections bccd=runs/ablate/yolov8_vs_yolov5_bccd/yolov5_ciou/seed0/detections.json
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch

from _common import ROOT, base_parser, report, row, setup
from detector import build
from detector.config import load_config
from detector.evaluation.coco import COCO_STAT_NAMES, EVAL_BACKENDS, evaluate_coco

DATASETS = {"coco128": None, "bccd": ROOT.parent / "shared" / "data" / "bccd"}  # name -> folder that must exist


def synthetic_detections(coco_gt, image_ids: list[int], per_image: int, jitter: float = 0.1, miss: float = 0.15,
                         wrong: float = 0.1, seed: int = 0) -> list[dict]:
    """COCO result dicts (``bbox`` xywh in image pixels) for ``image_ids``: the ground truth perturbed, then random
    background boxes up to ``per_image`` detections per image (none added where the objects already reach it).
    Scores: uniform in [0.5, 1) for the objects' detections, [0, 0.5) for the background.

    ``jitter``: std of the box corners' noise as a fraction of the box's width / height; ``miss``: probability
    that an object gets no detection; ``wrong``: probability that a detection gets a random category. With
    ``jitter = miss = wrong = 0`` and ``per_image = 0`` the detections are the ground truth (mAP 1).
    """
    g = torch.Generator().manual_seed(seed)
    cat_ids = torch.tensor(sorted(coco_gt.getCatIds()))  # (C,)
    anns = [a for i in image_ids for a in coco_gt.imgToAnns[i]]
    image = torch.tensor([a["image_id"] for a in anns], dtype=torch.long)  # (n,)
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)  # (n, 4)
    cat = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)  # (n,)
    keep = torch.rand(len(anns), generator=g) >= miss  # (n,)
    image, xywh, cat = image[keep], xywh[keep], cat[keep]
    wh = xywh[:, 2:].repeat(1, 2)  # (m, 4) the size along each corner coordinate
    noise = torch.randn(wh.shape, generator=g, dtype=torch.float64) * jitter * wh  # (m, 4)
    xyxy = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1) + noise  # (m, 4)
    swap = torch.rand(cat.shape, generator=g) < wrong
    cat = torch.where(swap, cat_ids[torch.randint(len(cat_ids), cat.shape, generator=g)], cat)  # (m,)

    ids = torch.tensor(image_ids, dtype=torch.long)  # (I,)
    found = (image[:, None] == ids[None]).sum(0)  # (I,) detections of objects per image
    fill = (per_image - found).clamp(min=0)  # (I,)
    size = torch.tensor([[coco_gt.imgs[i]["width"], coco_gt.imgs[i]["height"]] for i in image_ids],
                        dtype=torch.float64).repeat_interleave(fill, 0)  # (b, 2)
    corners = torch.rand(len(size), 2, 2, generator=g, dtype=torch.float64).sort(1).values * size[:, None]  # (b, 2, 2)
    image = torch.cat((image, ids.repeat_interleave(fill)))  # (m + b,)
    xyxy = torch.cat((xyxy, corners.flatten(1)))  # (m + b, 4) x1 y1 x2 y2
    cat = torch.cat((cat, cat_ids[torch.randint(len(cat_ids), (len(size),), generator=g)]))  # (m + b,)
    score = torch.rand(len(image), generator=g, dtype=torch.float64) * 0.5  # (m + b,)
    score[:len(xyxy) - len(size)] += 0.5  # the objects' detections rank above the background, as a trained model's
    box = torch.cat((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]), 1)  # (m + b, 4) xywh
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(image.tolist(), cat.tolist(), box.tolist(), score.tolist())]


def median_seconds(fn, repeat: int) -> tuple[float, object]:
    """(median seconds over ``repeat`` timed calls after one untimed call, the last call's value)."""
    value, times = fn(), []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def bench_dataset(name: str, args, device) -> list[dict]:
    """Rows of every backend on dataset ``name``'s validation split."""
    cfg = load_config("yolov5_ciou", [f"data.dataset={name}", *args.set])
    coco_gt = build.build_dataset(cfg, cfg.eval.split).coco_gt()
    if name in args.detections:
        record = json.loads(Path(args.detections[name]).read_text())
        image_ids, results, source = record["image_ids"], record["detections"], args.detections[name]
    else:
        image_ids = sorted(coco_gt.getImgIds())[:args.max_images]
        results = synthetic_detections(coco_gt, image_ids, args.per_image)
        source = f"synthetic, up to {args.per_image} per image"
    config = f"{name} {cfg.eval.split}: {len(image_ids)} images, {len(results):,} detections ({source})"
    rows, reference = [], None
    for backend in EVAL_BACKENDS:
        if importlib.util.find_spec(backend) is None:
            rows.append(row("COCO evaluation", f"{config}; {backend}", device, seconds=None, note="not installed"))
            continue
        seconds, stats = median_seconds(lambda: evaluate_coco(coco_gt, results, image_ids, backend=backend),
                                        args.repeat)
        reference = reference or (seconds, stats)
        rows.append(row("COCO evaluation", f"{config}; {backend}", device, seconds=seconds,
                        speedup=reference[0] / seconds, mAP=stats["mAP"],
                        max_abs_diff=max(abs(stats[k] - reference[1][k]) for k in COCO_STAT_NAMES)))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = base_parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--per-image", type=int, default=300, help="synthetic detections per image (default 300)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images (default all)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per backend (default 3)")
    p.add_argument("--detections", nargs="*", default=[], metavar="NAME=PATH", help="a run's detections.json")
    args = p.parse_args(argv)
    args.detections = dict(d.split("=", 1) for d in args.detections)
    if args.smoke:
        args.per_image, args.max_images, args.repeat = 20, 8, 1
    device = setup(args)
    rows = []
    for name in args.datasets:
        if DATASETS[name] is not None and not DATASETS[name].is_dir():
            print(f"{name}: skipped, {DATASETS[name]} does not exist")
            continue
        rows += bench_dataset(name, args, device)
    report(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
