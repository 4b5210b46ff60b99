#!/usr/bin/env python
"""Draw what a config's assigner makes of one training image, and print its assignment statistics.

    python tools/show_assign.py --cfg yolov5_ciou                                  # image 0 -> assign.png
    python tools/show_assign.py --cfg fcos --set data.img_size=320 --image 7 --out fcos7.png

Image N of the dataset's train split is letterboxed as for evaluation (no augmentation) and drawn with: each
ground-truth box in its own colour; for each positive pair, a filled dot at the prior's cell centre in the colour
of its box and, for anchor priors, the anchor box thin around that centre; ignored priors as small grey crosses;
one legend line per level with its positive pairs and ignored priors. The model has untrained weights, so
assigners that read predictions (``needs_predictions``: SimOTA, TAL, ...) see an untrained model's predictions.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import build  # noqa: E402
from detector.assigners.stats import assignment_stats, format_assignment_table  # noqa: E402
from detector.config import load_config  # noqa: E402
from detector.data import collate  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402
from detector.inference import class_colour  # noqa: E402
from detector.structures import Assignment, Priors  # noqa: E402

IGNORE_COLOUR = (160, 160, 160)  # BGR


def box_colour(i: int) -> tuple[int, int, int]:
    """BGR colour of ground-truth box ``i`` of the image (:func:`detector.inference.class_colour`)."""
    return class_colour(i, saturation=0.9)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="config file: a path, or a bare name resolved against configs/")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. data.img_size=320")
    p.add_argument("--image", type=int, default=0, help="index of the image in the train split (default 0)")
    p.add_argument("--out", default="assign.png", help="PNG to write (default assign.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained weights (default 0)")
    p.add_argument("--one-to-one", action="store_true",
                   help="with a one_to_one config section (NMS-free training): draw the one-to-one head's assignment "
                        "instead of the one-to-many head's")
    return p.parse_args(argv)


def draw_assignment(image: np.ndarray, boxes: np.ndarray, assignment: Assignment, priors: Priors) -> np.ndarray:
    """Draw on a copy of ``image`` (ndarray[S, S, 3] uint8 BGR) for one image (batch index 0).

    ``boxes`` (ndarray[k, 4] xyxy px) are the image's ground truths, row ``i`` drawn in :func:`box_colour` ``(i)``;
    ``assignment.gt_index`` indexes these rows.
    """
    canvas = image.copy()
    centres = priors.centers.cpu().numpy()  # (P, 2)
    anchors = None if priors.anchors is None else priors.anchors.cpu().numpy()  # (P, 2)
    prior_index, gt_index = assignment.prior_index.tolist(), assignment.gt_index.tolist()
    if anchors is not None:  # thin anchor boxes first, so the ground truths stay on top
        for p, g in zip(prior_index, gt_index):
            (cx, cy), (w, h) = centres[p], anchors[p]
            cv2.rectangle(canvas, (round(cx - w / 2), round(cy - h / 2)), (round(cx + w / 2), round(cy + h / 2)),
                          box_colour(g), 1)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cv2.rectangle(canvas, (round(x1), round(y1)), (round(x2), round(y2)), box_colour(i), 2)
    for p, g in zip(prior_index, gt_index):  # a dark rim keeps the dot visible on any background
        cv2.circle(canvas, (round(centres[p][0]), round(centres[p][1])), 4, (0, 0, 0), -1)
        cv2.circle(canvas, (round(centres[p][0]), round(centres[p][1])), 3, box_colour(g), -1)
    ignored = [] if assignment.ignore is None else assignment.ignore[0].nonzero().flatten().tolist()
    for p in ignored:
        cv2.drawMarker(canvas, (round(centres[p][0]), round(centres[p][1])), IGNORE_COLOUR, cv2.MARKER_CROSS, 6, 1)

    levels = priors.level.cpu()
    pos_level = torch.bincount(levels[assignment.prior_index.cpu()], minlength=priors.num_levels).tolist()
    ign_level = torch.bincount(levels[torch.tensor(ignored, dtype=torch.long)], minlength=priors.num_levels).tolist()
    strides = [int(priors.strides[o]) for o in priors.level_offsets[:-1]]
    for lvl, (s, n_pos, n_ign) in enumerate(zip(strides, pos_level, ign_level)):
        text = f"level {lvl} stride {s}: {n_pos} pos" + (f", {n_ign} ignored" if assignment.ignore is not None else "")
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(canvas, (0, 14 * lvl), (w + 6, 14 * lvl + 14), (0, 0, 0), -1)
        cv2.putText(canvas, text, (3, 14 * lvl + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.cfg, args.set)
        dataset = build.build_dataset(cfg, "train")
        if not 0 <= args.image < len(dataset):
            raise DatasetError(f"--image {args.image}: the train split of {cfg.data.dataset} has {len(dataset)} "
                               f"images; valid: 0..{len(dataset) - 1}")
        num_classes = len(dataset.names)
        torch.manual_seed(args.seed)
        model = build.build_model(cfg, num_classes).eval()
        criterion = build.build_criterion(cfg, num_classes)
        if cfg.one_to_one is not None:  # an eval-mode model gives one head's outputs: assign them with one criterion
            criterion = criterion.one_to_one if args.one_to_one else criterion.one_to_many
        elif args.one_to_one:
            raise ConfigError("one_to_one", "--one-to-one needs a config with a one_to_one section (yolo_e2e)")
        loader = build.build_loader(cfg, dataset, train=False)
        images, targets, metas = collate([loader.dataset[args.image]])  # the evaluation letterbox of image N
        with torch.no_grad():
            outputs = model(images)
            criterion(outputs, targets)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assignment, priors = criterion.last_assignment, outputs.priors

    image = cv2.cvtColor((images[0].permute(1, 2, 0) * 255).round().byte().numpy(), cv2.COLOR_RGB2BGR)
    canvas = draw_assignment(image, targets[:, 2:6].numpy(), assignment, priors)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        print(f"error: --out {out}: could not write a PNG there", file=sys.stderr)
        return 2

    assigner, sampler = criterion.assigner, criterion.sampler
    for part in (assigner, sampler):
        if getattr(part, "needs_predictions", False) or getattr(part, "needs_losses", False):
            print(f"note: {part!r} reads the model's outputs; these come from untrained weights (seed {args.seed}), "
                  "so a trained model's assignment differs")
    stats = {k: float(v) for k, v in assignment_stats(assignment, targets, priors, batch_size=1).items()}
    title = (f"{assigner!r} on image {args.image} (id {metas[0].image_id}) at {cfg.data.img_size} px: "
             f"{targets.shape[0]} ground truth(s), {len(priors)} priors")
    print(format_assignment_table(stats, title))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
