"""Error breakdown of saved detections: TIDE's six error types and what fixing each would gain in mAP50.

After Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors" (ECCV 2020), written here
because the ``tidecv`` package imports OpenCV, pandas and seaborn at import time. Detections are first matched to
ground truth as pycocotools does at IoU ``fg`` = 0.5 (per image and class, highest score first, each detection
to the best-overlapping unmatched ground truth; up to ``max_dets`` per image and class; a detection covering a
crowd region is ignored). Each unmatched detection (false positive) then gets the first type that applies:

* ``loc``  localisation: its best IoU with a ground truth of its class is in ``[bg, fg)``;
* ``cls``  classification: IoU >= ``fg`` with a ground truth of another class;
* ``dupe`` duplicate: IoU >= ``fg`` with a ground truth of its class already matched to a higher-scored box;
* ``bkg``  background: IoU <= ``bg`` (0.1) with every ground truth (or an image without any);
* ``both`` wrong class and IoU in ``(bg, fg)`` with it: everything else;

and a ground truth that no detection matched, and that no ``cls`` or ``loc`` error could claim, is ``miss``.

The gain of a type is the oracle ``mAP50(that type fixed) - mAP50`` (clamped at 0, as TIDE does): a ``cls`` or
``loc`` error becomes a true positive of the ground truth it points at when that ground truth is unmatched and
it is the highest-scored ``cls``/``loc`` error pointing there (the others are removed); ``dupe``, ``bkg`` and
``both`` errors are removed; a ``miss`` ground truth is removed. mAP50 is COCO's: 101-point interpolated
precision per class, averaged over the classes that have ground truth (with no class left, 0).

Deviations from ``tidecv``, each to agree with the project's pycocotools mAP: the detection cap is per image and
class (``tidecv``: per image), classes without ground truth are left out of the mean (``tidecv``: AP 0), and
detections ignored by a crowd region are neither scored nor given a type. With those, :attr:`ErrorBreakdown.ap50`
equals pycocotools' mAP50 of the same detections.

Shape letters: ``n`` detections and ``m`` ground truths of one image; ``K`` detections of the whole set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ERROR_TYPES = (("cls", "classification"), ("loc", "localisation"), ("both", "both"), ("dupe", "duplicate"),
               ("bkg", "background"), ("miss", "missed"))
"""The error types, in TIDE's order: (key, title)."""
_TP, _CLS, _LOC, _BOTH, _DUPE, _BKG, _DROP = 0, 1, 2, 3, 4, 5, -1  # per-detection codes
_CODE = {"cls": _CLS, "loc": _LOC, "both": _BOTH, "dupe": _DUPE, "bkg": _BKG}
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
"""COCO's 101 recall points of interpolated precision."""


@dataclass(frozen=True)
class ErrorBreakdown:
    """What :func:`error_breakdown` found.

    Attributes:
        ap50: mAP at IoU ``fg`` of the detections as they are.
        delta: error key -> mAP gained by fixing every error of that type (>= 0).
        counts: error key -> how many detections (``miss``: ground truths) have that type.
    """

    ap50: float
    delta: dict[str, float]
    counts: dict[str, int]


def box_iou_xywh(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of COCO ``(x, y, w, h)`` boxes, ``dets (n, 4)`` against ``gts (m, 4)`` -> ``(n, m)``; for a crowd
    ground truth (``crowd (m,)`` bool) the intersection over the detection's area, as pycocotools computes it."""
    d = np.concatenate([dets[:, :2], dets[:, :2] + dets[:, 2:]], 1)[:, None]  # (n, 1, 4) xyxy
    g = np.concatenate([gts[:, :2], gts[:, :2] + gts[:, 2:]], 1)[None]  # (1, m, 4) xyxy
    wh = np.clip(np.minimum(d[..., 2:], g[..., 2:]) - np.maximum(d[..., :2], g[..., :2]), 0, None)  # (n, m, 2)
    inter = wh[..., 0] * wh[..., 1]  # (n, m)
    area_d = (dets[:, 2] * dets[:, 3])[:, None]  # (n, 1)
    union = np.where(crowd[None], area_d, area_d + (gts[:, 2] * gts[:, 3])[None] - inter)  # (n, m)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(iou: np.ndarray, det_cls: np.ndarray, gt_cls: np.ndarray, crowd: np.ndarray, fg: float,
                max_dets: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one image, as pycocotools at one IoU threshold.

    Args:
        iou (n, m): from :func:`box_iou_xywh`, detections sorted by descending score.
        det_cls (n,), gt_cls (m,): category ids; crowd (m,): crowd ground truths.

    Returns:
        ``matched (n,)``: index of the matched ground truth or -1; ``status (n,)``: 1 scored, 0 ignored (covers
        a crowd region of its class, or beyond the first ``max_dets`` of its class).
    """
    n = len(det_cls)
    matched, status = np.full(n, -1), np.zeros(n, dtype=np.int64)
    taken = np.zeros(len(gt_cls), dtype=bool)
    for c in np.unique(det_cls):  # greedy matching is sequential in score order: a loop over detections
        same = gt_cls == c
        for i in np.flatnonzero(det_cls == c)[:max_dets]:
            free = same & ~crowd & ~taken & (iou[i] >= fg)
            if free.any():
                j = int(np.argmax(np.where(free, iou[i], -1.0)))
                matched[i], taken[j], status[i] = j, True, 1
            else:
                status[i] = 0 if (same & crowd & (iou[i] >= fg)).any() else 1
    return matched, status


def classify_image(iou: np.ndarray, det_cls: np.ndarray, gt_cls: np.ndarray, crowd: np.ndarray,
                   matched: np.ndarray, fg: float, bg: float) -> tuple[np.ndarray, np.ndarray]:
    """The error code of every unmatched detection and the ground truth a ``cls``/``loc`` error points at.

    Returns ``(code (n,), target (n,))``: code ``_TP`` for matched detections, else the first type of the module
    docstring that applies; target the ground-truth index (``-1`` unless ``cls`` or ``loc``).
    """
    n = len(det_cls)
    code, target = np.full(n, _TP), np.full(n, -1)
    fp = matched < 0
    real = np.flatnonzero(~crowd)  # (m',) the non-crowd ground truths
    if not fp.any():
        return code, target
    if len(real) == 0:
        code[fp] = _BKG
        return code, target
    ov = iou[:, real]  # (n, m')
    same = det_cls[:, None] == gt_cls[real][None]  # (n, m')
    used = np.isin(real, matched[matched >= 0])[None]  # (1, m')
    same_iou, other_iou = np.where(same, ov, 0.0), np.where(same, 0.0, ov)
    best_same, best_other = same_iou.max(1), other_iou.max(1)  # (n,)
    kinds = np.select([(best_same >= bg) & (best_same < fg), best_other >= fg,
                       np.where(same & used, ov, 0.0).max(1) >= fg, ov.max(1) <= bg], [_LOC, _CLS, _DUPE, _BKG],
                      _BOTH)
    code[fp] = kinds[fp]
    target = np.where(code == _LOC, real[same_iou.argmax(1)], np.where(code == _CLS, real[other_iou.argmax(1)], -1))
    return code, target


def average_precision(tp: np.ndarray, num_gt: int) -> float:
    """COCO's interpolated AP of one class: ``tp (k,)`` bool, detections in descending score order.

    Precision ``TP / (TP + FP)`` made non-increasing from the right, read at the first detection whose recall
    reaches each of the 101 :data:`RECALL_THRESHOLDS` (0 past the last recall), averaged.
    """
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)  # (k,)
    recall, precision = ctp / num_gt, ctp / (np.arange(1, len(tp) + 1) + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")  # (101,)
    return float(np.where(at < len(tp), precision[np.minimum(at, len(tp) - 1)], 0.0).mean())


def mean_ap(cls: np.ndarray, score: np.ndarray, tp: np.ndarray, gt_counts: dict[int, int]) -> float:
    """Mean over the classes with ``gt_counts[c] > 0`` of :func:`average_precision`; ``cls, score, tp (K,)`` in
    image order (stable sort by score within a class, as pycocotools); 0 when no class has ground truth."""
    aps = []
    for c, count in sorted(gt_counts.items()):
        if count > 0:
            sel = np.flatnonzero(cls == c)
            aps.append(average_precision(tp[sel[np.argsort(-score[sel], kind="stable")]], count))
    return math.fsum(aps) / len(aps) if aps else 0.0


def error_breakdown(coco_gt, detections: Sequence[dict], image_ids: Sequence[int] | None = None, *,
                    fg: float = 0.5, bg: float = 0.1, max_dets: int = 100) -> ErrorBreakdown:
    """TIDE's error breakdown of COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``)
    against a pycocotools ``COCO`` ground truth, on ``image_ids`` (default every image); see the module docstring.
    """
    ids = sorted(int(i) for i in (coco_gt.getImgIds() if image_ids is None else image_ids))
    per_image: dict[int, list[dict]] = {i: [] for i in ids}
    for d in detections:
        if int(d["image_id"]) in per_image:
            per_image[int(d["image_id"])].append(d)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("cls", "score", "code", "fixable", "fix_cls")}
    gt_cls_all, missed_all = [], []
    for i in ids:
        anns = coco_gt.imgToAnns.get(i, [])
        gt_box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)  # (m, 4)
        gt_cls = np.array([a["category_id"] for a in anns], dtype=np.int64)  # (m,)
        crowd = np.array([bool(a.get("iscrowd", 0) or a.get("ignore", 0)) for a in anns], dtype=bool)  # (m,)
        dets = sorted(per_image[i], key=lambda d: -d["score"])  # stable: ties keep the file's order
        box = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)  # (n, 4)
        cls = np.array([d["category_id"] for d in dets], dtype=np.int64)  # (n,)
        iou = box_iou_xywh(box, gt_box, crowd)  # (n, m)
        matched, status = match_image(iou, cls, gt_cls, crowd, fg, max_dets)
        code, target = classify_image(iou, cls, gt_cls, crowd, matched, fg, bg)
        code[status == 0] = _DROP
        claim = ((code == _CLS) | (code == _LOC)) & ~np.isin(target, matched)  # may become a true positive
        first = np.unique(target[claim], return_index=True)[1]  # highest score per ground truth
        fixable = np.zeros(len(dets), dtype=bool)
        fixable[np.flatnonzero(claim)[first]] = True
        usable = np.isin(np.arange(len(anns)), target[claim])
        cols["cls"].append(cls)
        cols["score"].append(np.array([d["score"] for d in dets], dtype=np.float64))
        cols["code"].append(code)
        cols["fixable"].append(fixable)
        cols["fix_cls"].append(np.where(fixable, gt_cls[np.maximum(target, 0)] if len(anns) else cls, cls))
        gt_cls_all.append(gt_cls[~crowd])
        missed_all.append((~np.isin(np.arange(len(anns)), matched) & ~usable)[~crowd])
    cls, score, code, fixable, fix_cls = (np.concatenate(cols[k]) if ids else np.zeros(0)
                                          for k in ("cls", "score", "code", "fixable", "fix_cls"))
    gt_cls, missed = (np.concatenate(gt_cls_all), np.concatenate(missed_all)) if ids else (np.zeros(0), np.zeros(0))
    counts_all = _counts(gt_cls, np.ones(len(gt_cls), dtype=bool))
    keep = code != _DROP
    base = mean_ap(cls[keep], score[keep], code[keep] == _TP, counts_all)
    delta = {}
    for key, _ in ERROR_TYPES:
        if key == "miss":
            fixed = mean_ap(cls[keep], score[keep], code[keep] == _TP, _counts(gt_cls, ~missed.astype(bool)))
        else:
            hit = code == _CODE[key]
            now_tp = hit & fixable if key in ("cls", "loc") else np.zeros_like(hit)
            sel = keep & (~hit | now_tp)
            fixed = mean_ap(np.where(now_tp, fix_cls, cls)[sel], score[sel], ((code == _TP) | now_tp)[sel],
                            counts_all)
        delta[key] = max(fixed - base, 0.0)
    counts = {key: int((code == _CODE[key]).sum()) for key, _ in ERROR_TYPES if key != "miss"}
    counts["miss"] = int(missed.sum())
    return ErrorBreakdown(base, delta, {key: counts[key] for key, _ in ERROR_TYPES})


def _counts(gt_cls: np.ndarray, keep: np.ndarray) -> dict[int, int]:
    """``{category id: number of kept ground truths}`` over every category present in ``gt_cls``."""
    return {int(c): int((keep & (gt_cls == c)).sum()) for c in np.unique(gt_cls)}
