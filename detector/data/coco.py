"""COCO JSON detection dataset.

Category ids (COCO's are 1..90 with gaps) map to contiguous indices by sorting the categories listed
in the JSON by id, so coco128 has 80 classes in COCO's order even though only 71 are used;
``dataset.cat_ids[index]`` gives the id back for writing detections. A category with no annotation
that is another category's supercategory (Roboflow's category 0) is not a class. Crowd annotations
(``iscrowd=1``) are not training targets, but stay in ``coco_gt()`` where COCOeval treats them as
ignore regions. What is checked, repaired or refused is listed in :mod:`detector.data.coco_table`.
"""
from __future__ import annotations

import json
import os
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from pycocotools.coco import COCO

from detector.data.base import (DetectionDataset, ImageRecord, Problem, check_names, coco_from_dict,
                                dataset_error, raise_fatal, warn_problems)
from detector.data.coco_table import CocoTable, coco_table

if TYPE_CHECKING:
    import torch


def load_coco_json(ann_file: str) -> dict:
    """Read a COCO instances JSON -> dict; DatasetError names the file (and line) if it is not one."""
    if not os.path.isfile(ann_file):
        raise dataset_error(ann_file, "annotation file not found")
    try:
        with open(ann_file, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise dataset_error(ann_file, f"not valid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise dataset_error(ann_file, f"not UTF-8 text (byte offset {e.start})") from None
    if not isinstance(data, dict):
        raise dataset_error(ann_file, f"expected a JSON object with images/annotations/categories, "
                                      f"got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise dataset_error(ann_file, f"missing or non-list keys {missing}; a COCO instances file has "
                                      f"'images', 'annotations' and 'categories' lists")
    return data


def coco_records(table: CocoTable, img_dir: str, ann_file: str) -> tuple[list[ImageRecord], list[Problem]]:
    """One :class:`ImageRecord` per image of ``table`` (sorted by id) whose file exists; problems for the others.

    Boxes are the table's clipped non-crowd boxes (degenerate ones were already left out).
    """
    train = ~table.crowd  # (N,)
    order = np.argsort(table.image_index[train], kind="stable")
    counts = np.bincount(table.image_index[train], minlength=len(table.images))  # (I,)
    per_image = np.split(order, np.cumsum(counts)[:-1])
    boxes, labels = table.xyxy[train], table.labels[train]
    records, problems = [], []
    for info, rows in zip(table.images, per_image):
        path = os.path.join(img_dir, info["file_name"])
        if not os.path.isfile(path):
            problems.append(Problem(path, f"image listed in {ann_file} (id {info['id']}) not found"))
            continue
        records.append(ImageRecord(path, int(info["id"]), int(info["height"]), int(info["width"]),
                                   boxes[rows], labels[rows]))
    return records, problems


class CocoDataset(DetectionDataset):
    """Images of a COCO instances JSON.

    Args:
        ann_file (str): the instances JSON.
        img_dir (str): folder the JSON's ``file_name`` entries are relative to.
        names (list[str] | None): optional class names; when given they must equal the JSON's
            category names in id order (the JSON is the source of truth for the mapping).
        max_images (int | None): keep only the first n images (sorted by image id).
        strict (bool): raise one DatasetError listing every fatal problem (default); False keeps
            them in ``problems`` and leaves their images or annotations out (for ``tools/check_data.py``).

    Attributes (besides :class:`DetectionDataset`'s):
        table (CocoTable): the checked annotations, crowd included, as arrays.
        cat_ids (list[int]): sorted COCO category ids; ``cat_ids[index]`` is the id of class ``index``.
        dropped_boxes (int): annotations left out because no area of them is inside their image.
    """

    def __init__(self, ann_file: str, img_dir: str, names: list[str] | None = None,
                 max_images: int | None = None, strict: bool = True) -> None:
        self.raw = load_coco_json(ann_file)
        table = coco_table(self.raw, ann_file)
        problems = list(table.problems)
        if not table.cat_ids:
            problems.append(Problem(ann_file, "no categories listed"))
        elif names is not None and list(names) != table.names:
            problems.append(Problem(ann_file, f"names given ({len(names)}: {list(names)[:5]}...) differ from the "
                                              f"categories in the JSON ({len(table.names)}: {table.names[:5]}...); "
                                              f"leave names out to use the JSON's"))
        if not os.path.isdir(img_dir):
            raise dataset_error(img_dir, f"image folder of {ann_file} not found")
        records, missing = coco_records(table, img_dir, ann_file)
        problems += missing
        if strict:
            raise_fatal(problems)
        if max_images is not None:
            records = records[:max_images]
        warn_problems(ann_file, problems, table.repairs)
        names = check_names(table.names, ann_file) if table.names else []
        super().__init__(records, names, table.cat_ids, source=ann_file, problems=problems, repairs=table.repairs)
        self.table = table
        self.dropped_boxes = table.repairs.get("zero-area boxes dropped", 0)
        self.ann_file = ann_file

    @cached_property
    def coco(self) -> COCO:
        """The whole annotation file as pycocotools reads it (built on first use)."""
        return coco_from_dict(self.raw)

    def coco_gt(self) -> COCO:
        """Evaluation ground truth of this dataset's images: exactly the training boxes, plus crowd regions.

        Non-crowd boxes are the clipped training targets (``bbox`` = their ``(x, y, w, h)``); the file's
        ``area`` is kept where positive (COCO's small / medium / large split uses it), else ``w * h``.
        Crowd annotations keep their box (clipped to the image) and ``iscrowd = 1``. Annotation ids are ``1..N``
        whatever the file's (pycocotools treats id 0 as "no match"); categories are the classes. Built once per set
        of image ids.
        """
        key = tuple(self.image_ids)
        cached = getattr(self, "_gt_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        t = self.table
        ids = np.asarray([im["id"] for im in t.images], dtype=np.int64)[t.image_index]  # (N,)
        selected = np.isin(ids, np.asarray(self.image_ids, dtype=np.int64))
        xyxy = t.xyxy[selected].astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)  # (n, 4)
        cats = np.asarray(self.cat_ids, dtype=np.int64)[t.labels[selected]]
        annotations = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": int(z)}
                       for k, (i, c, b, a, z) in enumerate(zip(ids[selected].tolist(), cats.tolist(), xywh.tolist(),
                                                               t.area[selected].tolist(), t.crowd[selected].tolist()))]
        images = [{"id": r.image_id, "file_name": os.path.basename(r.path), "height": r.height, "width": r.width}
                  for r in self.records]
        categories = [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.names)]
        gt = coco_from_dict({"images": images, "annotations": annotations, "categories": categories})
        self._gt_cache = (key, gt)
        return gt


def letterboxed_coco_targets(ann_file: str | os.PathLike, num_images: int, img_size: int,
                             skip_crowd: bool = True) -> torch.Tensor:
    """The boxes of the first ``num_images`` images (by id) of a COCO JSON as one collated target batch.

    Each image is letterboxed into an ``img_size`` square (scaled by ``img_size / max(h, w)`` and centred), as the
    evaluation loader does; classes are the contiguous index of the category in id order. Images without boxes keep
    their index and have no rows. For tests and benchmarks of assigners and losses on real boxes, without reading
    images.

    Returns:
        Tensor[n, 6] float32 = (image_index, class, x1, y1, x2, y2) in pixels of the letterboxed input.
    """
    import torch

    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    images = sorted(data["images"], key=lambda im: im["id"])[:num_images]
    index = {im["id"]: i for i, im in enumerate(images)}
    cats = {c["id"]: k for k, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    rows = []
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        if ann["image_id"] not in index or (skip_crowd and ann.get("iscrowd", 0)):
            continue
        im = images[index[ann["image_id"]]]
        scale = img_size / max(im["width"], im["height"])
        pad_x, pad_y = (img_size - im["width"] * scale) / 2, (img_size - im["height"] * scale) / 2
        x, y, w, h = ann["bbox"]
        rows.append([index[ann["image_id"]], cats[ann["category_id"]], x * scale + pad_x, y * scale + pad_y,
                     (x + w) * scale + pad_x, (y + h) * scale + pad_y])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
