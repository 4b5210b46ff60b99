"""Pascal VOC XML detection dataset.

Layout under ``root``: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and split lists
``ImageSets/Main/<split>.txt`` (one image id per line). Coordinates in the XML are VOC's 1-based
inclusive pixel indices, so pixel columns ``xmin..xmax`` cover ``[xmin - 1, xmax]`` in continuous
0-based coordinates: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``.

A box whose corners coincide in the file (``xmax <= xmin`` or ``ymax <= ymin``: a click rather
than a box, as in BCCD 00338 and 00343), or that lies wholly outside the image, is dropped and
counted in ``dropped_boxes``. ``difficult``
objects are kept as ordinary boxes. Image ids are positions in the split list (0..N-1).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np

from detector.data.base import (DetectionDataset, ImageRecord, Problem, check_names, dataset_error,
                                problem_from_error, raise_fatal, warn_problems)
from detector.errors import DatasetError


def split_file(root: str, split: str) -> str:
    """The id list of a split: a bare name -> ``root/ImageSets/Main/<split>.txt``, else a path under root."""
    if os.sep not in split and "/" not in split and not split.endswith(".txt"):
        return os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    return split if os.path.isabs(split) else os.path.join(root, split)


def parse_voc_xml(path: str, class_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Read one VOC annotation -> ``(boxes float32[k, 4] xyxy px, labels int64[k], height, width, dropped)``.

    Boxes are clipped to the image; ``dropped`` counts the boxes left out: degenerate in the file or wholly outside
    the image. Raises DatasetError naming the file for unparsable XML (with its line), a missing field, a size that
    is not positive, a non-finite corner or a class name not in ``class_index``.
    """
    if not os.path.isfile(path):
        raise dataset_error(path, "annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise dataset_error(path, f"not valid XML: {e}", line=e.position[0]) from None
    try:
        height = int(float(root.findtext("size/height")))
        width = int(float(root.findtext("size/width")))
    except (TypeError, ValueError, OverflowError):
        height = width = 0
    if height <= 0 or width <= 0:
        raise dataset_error(path, "needs <size><width>..</width><height>..</height></size> with positive numbers, "
                                  f"got width {root.findtext('size/width')!r}, height {root.findtext('size/height')!r}")
    names, corners = [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise dataset_error(path, f"object {k}: class name {name!r} is not one of {list(class_index)}")
        try:
            corners.append([float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise dataset_error(path, f"object {k} ({name}): needs numeric bndbox xmin, ymin, xmax, ymax") from None
        if not np.isfinite(corners[-1]).all():
            raise dataset_error(path, f"object {k} ({name}): bndbox has a non-finite value {corners[-1]}")
        names.append(name)
    corners = np.asarray(corners, dtype=np.float32).reshape(-1, 4)  # (k, 4) 1-based inclusive
    labels = np.asarray([class_index[n] for n in names], dtype=np.int64)
    boxes = corners - np.asarray([1, 1, 0, 0], dtype=np.float32)
    boxes = np.clip(boxes, 0, np.asarray([width, height, width, height], dtype=np.float32))
    keep = (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])  # a click, not a box
    keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # wholly outside the image
    return boxes[keep], labels[keep], height, width, int((~keep).sum())


class VocDataset(DetectionDataset):
    """Images of one split of a Pascal VOC folder.

    Args:
        root (str): folder with ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split (str): split name (``train``, ``val``, ``test``, ``trainval``) or path of an id list.
        names (list[str]): class names; an XML object named ``names[i]`` gets label ``i``.
        max_images (int | None): keep only the first n images of the split list.
        image_ext (str): extension of the files in ``JPEGImages/``.

    Attributes (besides :class:`DetectionDataset`'s):
        dropped_boxes (int): degenerate (zero-area) boxes left out.
    """

    def __init__(self, root: str, split: str, names: list[str], max_images: int | None = None,
                 image_ext: str = ".jpg", strict: bool = True) -> None:
        names = check_names(names, root)
        ids_file = split_file(root, split)
        if not os.path.isfile(ids_file):
            raise dataset_error(ids_file, f"split list not found (split {split!r} of VOC folder {root})")
        with open(ids_file, encoding="utf-8-sig") as f:
            ids = [ln.split()[0] for ln in f if ln.strip()]
        if max_images is not None:
            ids = ids[:max_images]
        class_index = {n: i for i, n in enumerate(names)}
        records, problems, self.dropped_boxes = [], [], 0
        for image_id, stem in enumerate(ids):
            xml = os.path.join(root, "Annotations", stem + ".xml")
            image = os.path.join(root, "JPEGImages", stem + image_ext)
            try:
                boxes, labels, height, width, dropped = parse_voc_xml(xml, class_index)
                if not os.path.isfile(image):
                    raise dataset_error(image, f"image of {xml} (listed in {ids_file}) not found")
            except DatasetError as e:
                problems.append(problem_from_error(e, xml))
                continue
            if dropped:
                problems.append(Problem(xml, f"{dropped} zero-area boxes (xmax <= xmin, ymax <= ymin, or wholly "
                                             f"outside the image) dropped", fatal=False))
            self.dropped_boxes += dropped
            records.append(ImageRecord(image, image_id, height, width, boxes, labels))
        if strict:
            raise_fatal(problems)
        repairs = {"zero-area boxes dropped": self.dropped_boxes}
        warn_problems(ids_file, problems, repairs)
        super().__init__(records, names, source=ids_file, problems=problems, repairs=repairs)
