"""COCO JSON detection dataset (pycocotools' COCO api).

Category ids (COCO's are 1..90 with gaps) map to contiguous indices by sorting *all* categories
listed in the JSON by id, so coco128 has 80 classes in COCO's order even though only 71 are used;
``dataset.cat_ids[index]`` gives the id back for writing detections. Crowd annotations
(``iscrowd=1``) are not training targets, but stay in ``coco_gt()`` where COCOeval treats them as
ignore regions.
"""
from __future__ import annotations

import json
import os

import numpy as np
from pycocotools.coco import COCO

from detector.data.base import (DetectionDataset, ImageRecord, check_names, coco_from_dict,
                                dataset_error)


def load_coco_json(ann_file: str) -> COCO:
    """Read a COCO instances JSON -> pycocotools COCO; DatasetError names the file (and line) if bad."""
    if not os.path.isfile(ann_file):
        raise dataset_error(ann_file, "annotation file not found")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise dataset_error(ann_file, f"not valid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    if not isinstance(data, dict):
        raise dataset_error(ann_file, f"expected a JSON object with images/annotations/categories, "
                                      f"got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise dataset_error(ann_file, f"missing or non-list keys {missing}; a COCO instances file has "
                                      f"'images', 'annotations' and 'categories' lists")
    return coco_from_dict(data)


def coco_records(coco: COCO, img_dir: str, cat_ids: list[int], ann_file: str) -> list[ImageRecord]:
    """One :class:`ImageRecord` per image of ``coco``, sorted by image id.

    Boxes: COCO ``(x, y, w, h)`` -> xyxy, clipped to the image; crowd annotations and boxes with
    zero width or height after clipping are left out of the training targets.
    """
    index_of = {cid: i for i, cid in enumerate(cat_ids)}
    records = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        try:
            path = os.path.join(img_dir, info["file_name"])
            height, width = int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise dataset_error(ann_file, f"image id {image_id}: needs file_name, height and width ({e!r})") from None
        if not os.path.isfile(path):
            raise dataset_error(path, f"image listed in {ann_file} (id {image_id}) not found")
        anns = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        unknown = sorted({a["category_id"] for a in anns} - set(index_of))
        if unknown:
            raise dataset_error(ann_file, f"image id {image_id}: category ids {unknown} are not listed "
                                          f"in 'categories' (valid ids: {cat_ids})")
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)  # (k, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        labels = np.asarray([index_of[a["category_id"]] for a in anns], dtype=np.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        records.append(ImageRecord(path, int(image_id), height, width, boxes[keep], labels[keep]))
    return records


class CocoDataset(DetectionDataset):
    """Images of a COCO instances JSON.

    Args:
        ann_file (str): the instances JSON.
        img_dir (str): folder the JSON's ``file_name`` entries are relative to.
        names (list[str] | None): optional class names; when given they must equal the JSON's
            category names in id order (the JSON is the source of truth for the mapping).
        max_images (int | None): keep only the first n images (sorted by image id).

    Attributes (besides :class:`DetectionDataset`'s):
        coco (COCO): the whole annotation file, crowd annotations included.
        cat_ids (list[int]): sorted COCO category ids; ``cat_ids[index]`` is the id of class ``index``.
    """

    def __init__(self, ann_file: str, img_dir: str, names: list[str] | None = None,
                 max_images: int | None = None) -> None:
        coco = load_coco_json(ann_file)
        cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
        if not cats:
            raise dataset_error(ann_file, "no categories listed")
        cat_ids = [int(c["id"]) for c in cats]
        json_names = [str(c.get("name", c["id"])) for c in cats]
        if names is not None and list(names) != json_names:
            raise dataset_error(ann_file, f"names given ({len(names)}: {list(names)[:5]}...) differ from the "
                                          f"categories in the JSON ({len(json_names)}: {json_names[:5]}...); "
                                          f"leave names out to use the JSON's")
        if not os.path.isdir(img_dir):
            raise dataset_error(img_dir, f"image folder of {ann_file} not found")
        records = coco_records(coco, img_dir, cat_ids, ann_file)
        if max_images is not None:
            records = records[:max_images]
        super().__init__(records, check_names(json_names, ann_file), cat_ids, source=ann_file)
        self.coco = coco
        self.ann_file = ann_file

    def coco_gt(self) -> COCO:
        """The original annotation file (crowd included) restricted to this dataset's images.

        Returns ``self.coco`` itself when the dataset holds every image of the file.
        """
        ids = set(self.image_ids)
        if ids == set(self.coco.getImgIds()):
            return self.coco
        data = dict(self.coco.dataset)
        data["images"] = [im for im in self.coco.dataset["images"] if im["id"] in ids]
        data["annotations"] = [a for a in self.coco.dataset["annotations"] if a["image_id"] in ids]
        return coco_from_dict(data)


def letterboxed_coco_targets(ann_file: str | os.PathLike, num_images: int, img_size: int,
                             skip_crowd: bool = True) -> "torch.Tensor":
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
