"""COCO-style box evaluation with pycocotools (or faster-coco-eval, which gives the same 12 numbers).

This is the only module of the package where boxes become COCO's ``(x, y, w, h)``: everything
upstream passes ``(x1, y1, x2, y2)`` pixels of the original image.

Typical use::

    coco_gt = load_coco_gt("annotations/instances_val2017.json")
    results = detections_to_coco(dets, image_ids, cat_ids)   # dets: list of Tensor[k, 6]
    stats = evaluate_coco(coco_gt, results)
    print(format_coco_table(stats))
    write_results_json("runs/exp/metrics.json", stats, {"checkpoint": "last.pt"})
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from detector.errors import DatasetError
from detector.ops.boxes import xyxy_to_xywh

# The 12 numbers of COCOeval.summarize(), in its order: (name, IoU range, area range, max detections).
COCO_STATS: tuple[tuple[str, str, str, int], ...] = (
    ("mAP", "0.50:0.95", "all", 100),
    ("mAP50", "0.50", "all", 100),
    ("mAP75", "0.75", "all", 100),
    ("mAP_small", "0.50:0.95", "small", 100),
    ("mAP_medium", "0.50:0.95", "medium", 100),
    ("mAP_large", "0.50:0.95", "large", 100),
    ("AR1", "0.50:0.95", "all", 1),
    ("AR10", "0.50:0.95", "all", 10),
    ("AR100", "0.50:0.95", "all", 100),
    ("AR_small", "0.50:0.95", "small", 100),
    ("AR_medium", "0.50:0.95", "medium", 100),
    ("AR_large", "0.50:0.95", "large", 100),
)
COCO_STAT_NAMES: tuple[str, ...] = tuple(row[0] for row in COCO_STATS)

# eval.backend -> the package that computes COCOeval. faster-coco-eval (C++, ``pip install -e ".[faster-coco-eval]"``)
# gives pycocotools' 12 numbers to 1e-15 on this project's detections (tests/evaluation/test_faster_coco_eval.py),
# several times faster.
EVAL_BACKENDS: tuple[str, ...] = ("pycocotools", "faster_coco_eval")


def _quiet(verbose: bool):
    """Context manager swallowing pycocotools' prints unless ``verbose``."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def load_coco_gt(path: str | os.PathLike, verbose: bool = False):
    """Load a COCO instances JSON as ``pycocotools.coco.COCO``; raises DatasetError naming the file."""
    from pycocotools.coco import COCO

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: COCO annotation file not found (expected an instances_*.json)")
    try:
        with _quiet(verbose):
            return with_positive_ann_ids(COCO(str(path)))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a valid COCO instances JSON ({type(exc).__name__}: {exc})") from exc


def with_positive_ann_ids(coco_gt):
    """``coco_gt`` itself if its annotation ids are unique and >= 1, else a copy with ids renumbered ``1..N``.

    pycocotools' COCOeval records a match as the partner's id and reads 0 as "no match", so a ground-truth
    annotation with id 0 (Roboflow exports start at 0) is never counted as found; repeated ids collide in its
    index. Results refer to images and categories only, so renumbering the ground truth changes no score.
    """
    from pycocotools.coco import COCO

    ids = [a.get("id") for a in coco_gt.dataset.get("annotations", [])]
    if all(isinstance(i, int) and i >= 1 for i in ids) and len(set(ids)) == len(ids):
        return coco_gt
    data = dict(coco_gt.dataset)
    data["annotations"] = [{**a, "id": k + 1} for k, a in enumerate(coco_gt.dataset["annotations"])]
    renumbered = COCO()
    renumbered.dataset = data
    with _quiet(verbose=False):
        renumbered.createIndex()
    return renumbered


def coco_gt_from_boxes(
    image_ids: Sequence[int],
    image_sizes: Sequence[tuple[int, int]],
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
    cat_ids: Sequence[int],
    cat_names: Sequence[str] | None = None,
):
    """Build an in-memory COCO ground truth from per-image boxes (for VOC / YOLO-txt datasets).

    Args:
        image_ids (list[int]): one id per image (unique).
        image_sizes (list[tuple[int, int]]): original ``(height, width)`` per image.
        boxes (list[Tensor[k, 4]]): xyxy boxes in original-image pixels, one tensor per image.
        labels (list[Tensor[k]]): contiguous class index ``0..C-1`` per box.
        cat_ids (list[int]): COCO category id of each contiguous class (``cat_ids[c]``).
        cat_names (list[str] | None): category names; defaults to ``str(cat_id)``.

    Returns:
        pycocotools.coco.COCO whose annotations have ``area = w * h`` and ``iscrowd = 0``
        (so the small / medium / large split uses box area, as YOLO evaluators do).
    """
    from pycocotools.coco import COCO

    if not (len(image_ids) == len(image_sizes) == len(boxes) == len(labels)):
        raise ValueError(
            "coco_gt_from_boxes: image_ids, image_sizes, boxes and labels must have one entry per image, got "
            f"{len(image_ids)}, {len(image_sizes)}, {len(boxes)}, {len(labels)}"
        )
    if cat_names is not None and len(cat_names) != len(cat_ids):
        raise ValueError(f"coco_gt_from_boxes: {len(cat_names)} cat_names for {len(cat_ids)} cat_ids")
    names = list(cat_names) if cat_names is not None else [str(c) for c in cat_ids]
    images = [
        {"id": int(i), "height": int(h), "width": int(w)} for i, (h, w) in zip(image_ids, image_sizes)
    ]
    annotations: list[dict[str, Any]] = []
    counts = [int(b.shape[0]) for b in boxes]
    if sum(counts):
        all_boxes = torch.cat([b.detach().float().cpu().reshape(-1, 4) for b in boxes])  # (N, 4) xyxy
        all_labels = torch.cat([lab.detach().cpu().reshape(-1).long() for lab in labels])  # (N,)
        if all_labels.shape[0] != all_boxes.shape[0]:
            raise ValueError("coco_gt_from_boxes: labels and boxes differ in length for some image")
        category = _category_lookup(all_labels, cat_ids, "coco_gt_from_boxes: labels")  # (N,)
        image = torch.tensor([int(i) for i in image_ids]).repeat_interleave(torch.tensor(counts))  # (N,)
        xywh = xyxy_to_xywh(all_boxes)  # (N, 4)
        area = xywh[:, 2] * xywh[:, 3]  # (N,)
        annotations = [
            {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": 0}
            for k, (i, c, b, a) in enumerate(zip(image.tolist(), category.tolist(), xywh.tolist(), area.tolist()))
        ]
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(c), "name": n} for c, n in zip(cat_ids, names)],
    }
    with _quiet(verbose=False):
        coco.createIndex()
    return coco


def _category_lookup(classes: Tensor, cat_ids: Sequence[int], what: str) -> Tensor:
    """classes (Tensor[N] long, contiguous 0..C-1) -> Tensor[N] long COCO category ids."""
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= len(cat_ids)):
        raise ValueError(
            f"{what}: class index out of range [{int(classes.min())}, {int(classes.max())}]; "
            f"cat_ids maps {len(cat_ids)} contiguous classes 0..{len(cat_ids) - 1}"
        )
    return torch.as_tensor(list(cat_ids), dtype=torch.long)[classes]


def detections_to_coco(dets: Sequence[Tensor], image_ids: Sequence[int], cat_ids: Sequence[int]) -> list[dict]:
    """Convert per-image detections to COCO result dicts.

    Args:
        dets (list[Tensor[k, 6]]): per image ``(x1, y1, x2, y2, score, class)``, boxes in ORIGINAL
            image pixels (after undoing letterbox), ``class`` the contiguous index ``0..C-1``.
            ``k`` may be 0.
        image_ids (list[int]): COCO image id of each entry of ``dets``.
        cat_ids (list[int]): COCO category id of each contiguous class (``cat_ids[c]``).

    Returns:
        list[dict]: one ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``
        per detection, in input order.
    """
    if len(dets) != len(image_ids):
        raise ValueError(f"detections_to_coco: {len(dets)} detection tensors for {len(image_ids)} image_ids")
    for i, d in enumerate(dets):
        if d.ndim != 2 or d.shape[1] != 6:
            raise ValueError(
                f"detections_to_coco: dets[{i}] must be Tensor[k, 6] = (x1, y1, x2, y2, score, class), "
                f"got shape {tuple(d.shape)}"
            )
    counts = [int(d.shape[0]) for d in dets]
    if sum(counts) == 0:
        return []
    all_dets = torch.cat([d.detach().float().cpu() for d in dets])  # (N, 6)
    image = torch.tensor([int(i) for i in image_ids]).repeat_interleave(torch.tensor(counts))  # (N,)
    category = _category_lookup(all_dets[:, 5].round().long(), cat_ids, "detections_to_coco: dets[:, 5]")  # (N,)
    xywh = xyxy_to_xywh(all_dets[:, :4])  # (N, 4)
    return [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(image.tolist(), category.tolist(), xywh.tolist(), all_dets[:, 4].tolist())
    ]


def evaluate_coco(
    coco_gt,
    results: Sequence[dict],
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
    backend: str = "pycocotools",
) -> dict[str, float]:
    """Run bbox COCOeval (pycocotools', or faster-coco-eval's) and return its 12 summary numbers by name.

    Args:
        coco_gt (pycocotools.coco.COCO): the ground truth.
        results (list[dict]): COCO result dicts (see :func:`detections_to_coco`); not modified.
        image_ids (list[int] | None): evaluate only these images (ground truth and detections of other
            images are left out); None evaluates every image of ``coco_gt``.
        verbose (bool): let pycocotools print its progress and summary.
        backend (str): ``"pycocotools"`` or ``"faster_coco_eval"`` (:data:`EVAL_BACKENDS`, config ``eval.backend``):
            the same numbers, the second several times faster.

    Returns:
        dict[str, float] with the keys of :data:`COCO_STAT_NAMES`: ``mAP`` (IoU 0.50:0.95), ``mAP50``,
        ``mAP75``, ``mAP_small``, ``mAP_medium``, ``mAP_large``, ``AR1``, ``AR10``, ``AR100``,
        ``AR_small``, ``AR_medium``, ``AR_large``. A value is -1.0 (pycocotools' sentinel) when the
        evaluated images hold no ground truth in that area range. Empty ``results`` give 0.0 for
        all 12 (pycocotools itself cannot load an empty result list).

    Note (pycocotools semantics): categories with no ground truth in the evaluated images are
    left out of the means, so detections of such categories cost nothing; crowd ground truths
    (``iscrowd = 1``) are ignored regions, and detections matched to them count neither way. Ground-truth
    annotation ids of 0 or repeated ids are renumbered first (:func:`with_positive_ann_ids`).
    """
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"evaluate_coco: backend must be one of {EVAL_BACKENDS} (eval.backend), got {backend!r}")
    coco_gt = with_positive_ann_ids(coco_gt)
    gt_ids = set(coco_gt.getImgIds())
    if image_ids is None:
        eval_ids = sorted(gt_ids)
    else:
        eval_ids = sorted({int(i) for i in image_ids})
        if not eval_ids:
            raise ValueError("evaluate_coco: image_ids is empty; pass None to evaluate every image")
        unknown = set(eval_ids) - gt_ids
        if unknown:
            raise ValueError(
                f"evaluate_coco: image_ids {sorted(unknown)[:10]} are not in the ground truth "
                f"({len(gt_ids)} images)"
            )
    result_ids = {r["image_id"] for r in results}
    unknown = result_ids - gt_ids
    if unknown:
        raise ValueError(
            f"evaluate_coco: results hold image_id {sorted(unknown)[:10]} absent from the ground truth; "
            "check the image ids passed to detections_to_coco"
        )
    keep = set(eval_ids)
    # shallow copies: loadRes adds id / area / iscrowd / segmentation keys to each dict in place
    selected = [dict(r) for r in results if r["image_id"] in keep]
    if not selected:
        return dict.fromkeys(COCO_STAT_NAMES, 0.0)
    with _quiet(verbose):
        evaluator = _evaluator(coco_gt, selected, backend, verbose)
        evaluator.params.imgIds = eval_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats[:len(COCO_STAT_NAMES)])}


def _evaluator(coco_gt, results: list[dict], backend: str, verbose: bool):
    """A bbox COCOeval of ``backend`` over ``coco_gt`` (pycocotools' COCO) and the result dicts, not yet run."""
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError as err:
        raise ModuleNotFoundError(
            'eval.backend: faster_coco_eval is not installed; pip install -e ".[faster-coco-eval]", or set '
            "eval.backend: pycocotools"
        ) from err
    say = print if verbose else (lambda *args, **kwargs: None)
    gt = COCO(coco_gt.dataset, print_function=say)  # reads the dict, does not modify it
    return COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=say)


def format_coco_table(stats: dict[str, float]) -> str:
    """A fixed-width table of the 12 COCO numbers (``n/a`` for pycocotools' -1 sentinel)."""
    missing = [name for name in COCO_STAT_NAMES if name not in stats]
    if missing:
        raise ValueError(f"format_coco_table: stats lack {missing}; expected the keys of evaluate_coco()")
    lines = [f"{'metric':<11}{'IoU':<11}{'area':<8}{'maxDets':>7}{'value':>9}"]
    for name, iou, area, max_dets in COCO_STATS:
        value = float(stats[name])
        shown = "n/a" if value < 0 else f"{value:.4f}"
        lines.append(f"{name:<11}{iou:<11}{area:<8}{max_dets:>7}{shown:>9}")
    return "\n".join(lines)


def write_results_json(path: str | os.PathLike, stats: dict[str, float], extra: dict | None = None) -> Path:
    """Write ``{"stats": stats, **extra}`` as JSON, atomically (temporary file + ``os.replace``).

    ``extra`` holds run metadata (config path, checkpoint, epoch, ...) and must be JSON-serialisable and
    must not use the key ``"stats"``. Parent folders are created. Returns the path written.
    """
    extra = dict(extra or {})
    if "stats" in extra:
        raise ValueError("write_results_json: extra must not contain the key 'stats' (it holds the metrics)")
    payload = {"stats": {k: float(v) for k, v in stats.items()}, **extra}
    text = json.dumps(payload, indent=2)  # fails before touching the disk if extra is not serialisable
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
