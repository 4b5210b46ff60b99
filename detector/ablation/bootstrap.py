"""Paired bootstrap over evaluation images: how much of a mAP gap the finite evaluation set can explain.

Seeds measure training noise; this measures the other source, the evaluation set being a sample of images.
One resample draws ``N`` of the ``N`` evaluated image ids with replacement (an id drawn twice counts twice:
its copies get new ids, with their ground truth and detections). Both variants' saved detections
(``detections.json``, written by the final evaluation of ``fit``) are scored with pycocotools on the SAME
resample; the difference ``variant - baseline`` (averaged over the seed pairs given) is one bootstrap value.
The percentile interval of those values is the CI of the mAP difference that exists even with one seed.

Shape letters: ``R`` resamples, ``N`` evaluated images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from detector.data.base import coco_from_dict
from detector.evaluation.coco import evaluate_coco


@dataclass(frozen=True)
class BootstrapResult:
    """The paired bootstrap of one metric.

    Attributes:
        metric: the COCO stat (``mAP``).
        observed: mean over the seed pairs of ``metric(variant) - metric(baseline)`` on the full evaluation set.
        interval: ``(low, high)`` percentile interval of the resampled differences at ``level``.
        level: e.g. 0.95.
        deltas: the R resampled differences, in draw order.
    """

    metric: str
    observed: float
    interval: tuple[float, float]
    level: float
    deltas: tuple[float, ...]


def read_detections(path: str | Path) -> tuple[list[int], list[dict]]:
    """``(image_ids, COCO result dicts)`` of a ``detections.json`` written by ``evaluate(detections_path=...)``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [int(i) for i in data["image_ids"]], list(data["detections"])


def bootstrap_draws(num_images: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``(R, N)`` int64 positions into the evaluated image list, drawn uniformly with replacement."""
    return np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))


def _by_image(items: Sequence[dict], image_ids: Sequence[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {int(i): [] for i in image_ids}
    for item in items:
        if item["image_id"] in out:
            out[item["image_id"]].append(item)
    return out


def resample_coco(coco_gt, image_ids: Sequence[int], draw: Sequence[int], detection_sets: Sequence[Sequence[dict]]):
    """The ground truth and detection sets of one resample.

    Args:
        coco_gt (pycocotools COCO): the ground truth of (at least) ``image_ids``.
        image_ids: the N evaluated image ids; draw (N,): positions into it, repeats allowed.
        detection_sets: COCO result lists to remap the same way.

    Returns:
        ``(COCO, [remapped result lists])``: draw ``k`` becomes image ``k + 1`` holding a copy of image
        ``image_ids[draw[k]]``'s record, annotations (renumbered ``1..``) and detections.
    """
    images, annotations = [], []
    for k, pos in enumerate(draw):
        source = int(image_ids[pos])
        images.append({**coco_gt.imgs[source], "id": k + 1})
        for ann in coco_gt.imgToAnns.get(source, []):
            annotations.append({**ann, "image_id": k + 1, "id": len(annotations) + 1})
    gt = coco_from_dict({"images": images, "annotations": annotations,
                         "categories": list(coco_gt.dataset["categories"])})
    remapped = []
    for dets in detection_sets:
        per_image = _by_image(dets, image_ids)
        remapped.append([{**d, "image_id": k + 1} for k, pos in enumerate(draw)
                         for d in per_image[int(image_ids[pos])]])
    return gt, remapped


def _difference(coco_gt, pairs: Sequence[tuple[Sequence[dict], Sequence[dict]]], image_ids, metric: str) -> float:
    """Mean over pairs of ``metric(variant) - metric(baseline)`` on ``image_ids`` of ``coco_gt``."""
    diffs = [evaluate_coco(coco_gt, v, image_ids=image_ids)[metric]
             - evaluate_coco(coco_gt, b, image_ids=image_ids)[metric] for b, v in pairs]
    return float(np.mean(diffs))


def paired_bootstrap(coco_gt, image_ids: Sequence[int], pairs: Sequence[tuple[Sequence[dict], Sequence[dict]]],
                     draws: np.ndarray, metric: str = "mAP", level: float = 0.95) -> BootstrapResult:
    """The paired bootstrap CI of ``metric(variant) - metric(baseline)``.

    Args:
        coco_gt: ground truth holding ``image_ids``.
        image_ids: the N evaluated images (the same for every run: the runs evaluated one split).
        pairs: per seed, ``(baseline detections, variant detections)`` as COCO result dicts.
        draws (R, N): from :func:`bootstrap_draws`; every pair is scored on the same resamples.
        metric, level: the COCO stat and the interval's coverage.

    Identical detections give every difference 0, so ``(0, 0)``; a variant better on every image gives an
    interval above 0. The interval is numpy's linear-interpolated ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the R differences.
    """
    if not pairs:
        raise ValueError("paired_bootstrap: no (baseline, variant) detection pairs")
    draws = np.asarray(draws)
    if draws.ndim != 2 or draws.shape[1] != len(image_ids) or len(draws) == 0:
        raise ValueError(f"paired_bootstrap: draws must be (R >= 1, N = {len(image_ids)}), got {draws.shape}")
    observed = _difference(coco_gt, pairs, image_ids, metric)
    deltas = []
    for draw in draws:  # one COCOeval per run and resample: the cost is pycocotools', not this loop's
        flat = [dets for pair in pairs for dets in pair]
        gt, remapped = resample_coco(coco_gt, image_ids, draw, flat)
        deltas.append(_difference(gt, list(zip(remapped[0::2], remapped[1::2])), None, metric))
    low, high = np.quantile(deltas, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapResult(metric, observed, (float(low), float(high)), level, tuple(deltas))
