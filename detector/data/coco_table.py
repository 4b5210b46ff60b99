"""A COCO instances JSON checked and turned into flat arrays, every problem named by image or annotation id.

What is wrong with a file is collected as :class:`Problem` s rather than raised one at a time:

- fatal: an image id used twice (pycocotools would keep one entry and move the other's boxes onto it), an image
  without ``file_name``/``height``/``width``, a category id used twice, an annotation without ``image_id``,
  ``category_id`` or a ``bbox`` of 4 finite numbers, a category id not listed in ``categories``;
- repaired and counted: boxes (crowd regions too) are clipped to their image, and those with no area left
  (negative or zero width or height, wholly outside) are dropped from training *and* from the evaluation ground
  truth; annotation ids are renumbered 1..N for evaluation (pycocotools reads an id of 0, which Roboflow exports
  start at, as "no match"); annotations of an image not in ``images`` are ignored;
- a category with no annotation whose name is another category's ``supercategory`` (Roboflow lists the
  dataset's name as category 0 this way) is not a class; the warning names it.

Box format of the table: COCO ``(x, y, w, h)`` pixels as in the file, plus ``xyxy`` clipped to the image.
Letters: N annotations, I images.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from detector.data.base import Problem


@dataclass
class CocoTable:
    """The usable content of a COCO JSON.

    Attributes:
        images (list[dict]): image entries sorted by id (ids unique, fields checked).
        cat_ids (list[int]): category ids that are classes, sorted; ``cat_ids[index]`` is class ``index``'s id.
        names (list[str]): name of each class.
        image_index (ndarray[N] int64): position in ``images`` of each kept annotation.
        labels (ndarray[N] int64): class index of each kept annotation.
        xyxy (ndarray[N, 4] float32): box (or crowd region) clipped to its image, pixels; positive width and height.
        area (ndarray[N] float64): the file's ``area`` where positive and finite, else the clipped box's.
        crowd (ndarray[N] bool): ``iscrowd`` (not a training target; an ignore region in evaluation).
        ann_ids (ndarray[N] int64): the file's annotation id of each kept annotation (for messages).
        problems (list[Problem]): fatal and non-fatal problems found.
        repairs (dict[str, int]): count of each repair.
    """

    images: list[dict]
    cat_ids: list[int]
    names: list[str]
    image_index: np.ndarray
    labels: np.ndarray
    xyxy: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    ann_ids: np.ndarray
    problems: list[Problem] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)


def _is_int(value) -> bool:
    """An integer (not a bool) that fits int64."""
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63


def _is_finite(value) -> bool:
    """A finite int or float (not a bool) that fits float64."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float64
        return False


def _ids_text(ids, limit: int = 10) -> str:
    ids = list(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{ids[:limit]}{more}"


def check_images(images: list, ann_file: str) -> tuple[list[dict], list[Problem]]:
    """The image entries with unique int ids and ``file_name``/``height``/``width``, sorted by id; problems."""
    problems = []
    counts = Counter(im.get("id") if isinstance(im, dict) and _is_int(im.get("id")) else None for im in images)
    duplicates = sorted(i for i, n in counts.items() if n > 1 and _is_int(i))
    if duplicates:
        files = {i: [im.get("file_name") for im in images if isinstance(im, dict) and im.get("id") == i]
                 for i in duplicates[:3]}
        problems.append(Problem(ann_file, f"image ids {_ids_text(duplicates)} appear more than once in 'images' "
                                          f"(e.g. {files}); every image needs its own id"))
    good = []
    for k, im in enumerate(images):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            problems.append(Problem(ann_file, f"images[{k}]: needs an integer 'id', got {im!r:.80}"))
        elif not (isinstance(im.get("file_name"), str) and _is_int(im.get("height")) and _is_int(im.get("width"))
                  and im["height"] > 0 and im["width"] > 0):
            problems.append(Problem(ann_file, f"image id {im['id']}: needs file_name, and height and width as "
                                              f"positive integers, got {im!r:.120}"))
        elif counts[im["id"]] == 1:
            good.append(im)
    return sorted(good, key=lambda im: im["id"]), problems


def check_categories(categories: list, used: set, ann_file: str) -> tuple[list[int], list[str], list[Problem]]:
    """Class ids and names (sorted by id) from ``categories``; Roboflow's unused supercategory left out."""
    problems, cats = [], {}
    for k, c in enumerate(categories):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            problems.append(Problem(ann_file, f"categories[{k}]: needs an integer 'id', got {c!r:.80}"))
        elif c["id"] in cats:
            problems.append(Problem(ann_file, f"category id {c['id']} is listed twice in 'categories'"))
        else:
            cats[c["id"]] = c
    supers = {str(c.get("supercategory")) for c in cats.values() if c.get("supercategory") is not None}
    dropped = [i for i, c in cats.items() if i not in used and str(c.get("name", i)) in supers]
    for i in dropped:
        problems.append(Problem(ann_file, f"category id {i} ({cats[i].get('name')!r}) has no annotations and is "
                                          f"the supercategory of others (as in Roboflow exports): not a class",
                                fatal=False))
    ids = sorted(i for i in cats if i not in dropped)
    return ids, [str(cats[i].get("name", i)) for i in ids], problems


def _bbox_array(anns: list[dict], ann_file: str) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """``(xywh float64[N, 4], ok bool[N], problems)``: rows of malformed annotations are zeros, not ok."""
    bbox = [a.get("bbox") if isinstance(a, dict) else None for a in anns]
    try:
        xywh = np.asarray(bbox, dtype=np.float64).reshape(len(anns), 4)  # fast path: all well formed
        ok = np.isfinite(xywh).all(1)
    except (TypeError, ValueError, OverflowError):
        ok = np.asarray([isinstance(b, (list, tuple)) and len(b) == 4 and all(_is_finite(v) for v in b)
                         for b in bbox], dtype=bool)
        xywh = np.asarray([b if good else [0, 0, 0, 0] for b, good in zip(bbox, ok)], np.float64).reshape(-1, 4)
    problems = [Problem(ann_file, f"annotation id {anns[k].get('id') if isinstance(anns[k], dict) else None}: "
                                  f"bbox must be 4 finite numbers [x, y, w, h], got {bbox[k]!r:.80}")
                for k in np.flatnonzero(~ok)]
    return np.where(ok[:, None], xywh, 0.0), ok, problems


def coco_table(data: dict, ann_file: str) -> CocoTable:
    """Check a loaded COCO JSON (``images``, ``annotations``, ``categories`` lists) -> :class:`CocoTable`."""
    images, problems = check_images(data["images"], ann_file)
    anns = list(data["annotations"])
    fields_ok = np.asarray([isinstance(a, dict) and _is_int(a.get("image_id")) and _is_int(a.get("category_id"))
                            and a.get("iscrowd", 0) in (0, 1) for a in anns], dtype=bool)
    problems += [Problem(ann_file, f"annotation {a.get('id') if isinstance(a, dict) else k!r}: needs integer "
                                   f"image_id and category_id (and iscrowd 0 or 1), got {a!r:.100}")
                 for k, a in enumerate(anns) if not fields_ok[k]]
    xywh, box_ok, box_problems = _bbox_array(anns, ann_file)  # (N, 4), (N,)
    problems += box_problems
    get = lambda key, default: np.asarray([a.get(key, default) if ok else default  # noqa: E731
                                           for a, ok in zip(anns, fields_ok)])
    ann_image, ann_cat = get("image_id", -1).astype(np.int64), get("category_id", -1).astype(np.int64)
    ann_ids = np.asarray([a.get("id") if ok and _is_int(a.get("id")) else -1 for a, ok in zip(anns, fields_ok)],
                         dtype=np.int64)
    crowd = get("iscrowd", 0).astype(bool)
    file_area = np.asarray([a.get("area") if ok and _is_finite(a.get("area")) else 0
                            for a, ok in zip(anns, fields_ok)], dtype=np.float64)

    image_pos = {im["id"]: k for k, im in enumerate(images)}
    index = np.asarray([image_pos.get(int(i), -1) for i in ann_image], dtype=np.int64)  # (N,)
    listed_image = {im.get("id") for im in data["images"] if isinstance(im, dict) and _is_int(im.get("id"))}
    orphan = fields_ok & (index < 0) & np.asarray([int(i) not in listed_image for i in ann_image], dtype=bool)
    if orphan.any():
        problems.append(Problem(ann_file, f"annotation ids {_ids_text(ann_ids[orphan].tolist())} refer to image ids "
                                          f"{_ids_text(sorted(set(ann_image[orphan].tolist())))} not in 'images'; "
                                          f"ignored", fatal=False))
    cat_ids, names, cat_problems = check_categories(data["categories"], set(ann_cat[fields_ok].tolist()), ann_file)
    problems += cat_problems
    cat_pos = {c: k for k, c in enumerate(cat_ids)}
    labels = np.asarray([cat_pos.get(int(c), -1) for c in ann_cat], dtype=np.int64)  # (N,)
    unknown = fields_ok & (labels < 0) & (index >= 0)
    for image in sorted(set(ann_image[unknown].tolist())):
        rows = unknown & (ann_image == image)
        listed, bad = _ids_text(ann_ids[rows].tolist()), sorted(set(ann_cat[rows].tolist()))
        problems.append(Problem(ann_file, f"image id {image}: category ids {bad} are not listed in 'categories' "
                                          f"(annotation ids {listed}; valid ids: {cat_ids})"))

    usable = fields_ok & box_ok & (index >= 0) & (labels >= 0)  # (N,)
    sizes = np.asarray([[im["width"], im["height"]] for im in images] + [[0, 0]], dtype=np.float64)  # (I + 1, 2)
    size = sizes[index]  # (N, 2); index -1 (no such image) reads the last row, (0, 0)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (N, 4)
    xyxy = np.clip(xyxy, 0, np.concatenate([size, size], axis=1))
    positive = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    degenerate = usable & ~positive  # crowd regions too: clipping changes no COCOeval match (detections are inside)
    if degenerate.any():
        problems.append(Problem(ann_file, f"annotation ids {_ids_text(ann_ids[degenerate].tolist())} have no area "
                                          f"inside their image (negative or zero width/height, or wholly outside): "
                                          f"dropped from training and evaluation", fatal=False))
    keep = usable & positive
    box_area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    area = np.where(np.isfinite(file_area) & (file_area > 0), file_area, box_area)
    kept_ids = ann_ids[keep]
    odd_ids = int((kept_ids < 1).sum()) + kept_ids.size - np.unique(kept_ids).size
    repairs = {"zero-area boxes dropped": int(degenerate.sum()),
               "annotation ids < 1 or repeated (all renumbered 1..N for evaluation)": odd_ids}
    return CocoTable(images, cat_ids, names, index[keep], labels[keep],
                     xyxy[keep].astype(np.float32), area[keep], crowd[keep],
                     kept_ids, problems, repairs)
