"""YOLO txt detection dataset (YOLOv5's layout).

Each image ``.../images/<split>/<stem>.<ext>`` has an optional label file
``.../labels/<split>/<stem>.txt`` (the last ``images`` folder of the path replaced by ``labels``,
unless a label folder is given), one object per line::

    class cx cy w h                      # normalised to [0, 1] by the image width / height
    class x1 y1 x2 y2 ... xm ym          # a polygon (m >= 3 points); its bounding box is used

An image without a label file has no boxes. Label files without an image are ignored, with one
warning counting them. Image ids are positions in the sorted image list (0..N-1); classes are
the indices into ``names`` and ``cat_ids = index + 1`` in ``coco_gt()``.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from detector.data.base import DetectionDataset, ImageRecord, check_names, dataset_error

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def list_images(spec: str) -> list[str]:
    """Image paths of a split: a folder (sorted files with an image extension) or a ``.txt`` list.

    In a ``.txt`` list, one path per line; relative paths are relative to the list's folder.
    """
    if os.path.isdir(spec):
        names = sorted(f for f in os.listdir(spec) if f.lower().endswith(IMAGE_EXTENSIONS))
        return [os.path.join(spec, f) for f in names]
    if os.path.isfile(spec) and spec.endswith(".txt"):
        base = os.path.dirname(spec)
        with open(spec, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
        paths = [os.path.normpath(os.path.join(base, ln)) for ln in lines if ln]
        for lineno, (ln, p) in enumerate(zip(lines, paths), start=1):
            if not p.lower().endswith(IMAGE_EXTENSIONS):
                raise dataset_error(spec, f"{ln!r} is not an image path (extensions {IMAGE_EXTENSIONS})", lineno)
        return paths
    raise dataset_error(spec, "image split not found: expected a folder of images or a .txt list of image paths")


def label_path(image_path: str, label_dir: str | None = None) -> str:
    """Label file of an image: ``label_dir/<stem>.txt``, or YOLOv5's ``/images/`` -> ``/labels/`` rule."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    if label_dir is not None:
        return os.path.join(label_dir, stem + ".txt")
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    folder = os.path.dirname(image_path) + os.sep
    if sa in folder:
        folder = sb.join(folder.rsplit(sa, 1))
    return os.path.join(folder, stem + ".txt")


def parse_label_file(path: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one YOLO label file -> ``(labels int64[k], boxes float32[k, 4] normalised cxcywh)``.

    Raises DatasetError naming the file and line for a malformed line, a class outside
    ``0..num_classes-1`` or a coordinate outside ``[0, 1]``.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    labels, boxes = [], []
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise dataset_error(path, f"expected numbers 'class cx cy w h', got {line.strip()!r}", lineno) from None
        if len(values) == 5:
            box = values[1:]
        elif len(values) >= 7 and len(values) % 2 == 1:
            xy = np.asarray(values[1:]).reshape(-1, 2)  # (m, 2) polygon points
            (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
            box = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        else:
            raise dataset_error(path, f"expected 5 values 'class cx cy w h' (or a class and >= 3 polygon "
                                      f"points), got {len(values)}: {line.strip()!r}", lineno)
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise dataset_error(path, f"class {parts[0]!r} is not an integer in 0..{num_classes - 1}", lineno)
        if not all(0.0 <= v <= 1.0 for v in values[1:]):
            raise dataset_error(path, f"coordinates must be normalised to [0, 1], got {line.strip()!r}", lineno)
        labels.append(int(cls))
        boxes.append(box)
    return np.asarray(labels, dtype=np.int64), np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def normalised_cxcywh_to_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """boxes (ndarray[k, 4]) normalised cxcywh -> ndarray[k, 4] float32 xyxy pixels, clipped to the image."""
    scale = np.asarray([width, height, width, height], dtype=np.float32)
    cxcy, wh = boxes[:, :2], boxes[:, 2:]
    xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1) * scale  # (k, 4)
    return np.clip(xyxy, 0, scale).astype(np.float32)


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (no EXIF rotation); DatasetError if unreadable."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as e:
        raise dataset_error(path, f"cannot read image header: {e}") from None
    return height, width


class YoloDataset(DetectionDataset):
    """Images of a folder (or .txt list) with YOLO txt labels.

    Args:
        images (str): folder of images or ``.txt`` list of image paths.
        names (list[str]): class names; label class ``i`` is ``names[i]``.
        label_dir (str | None): folder of the label files; default YOLOv5's ``images -> labels`` rule.
        max_images (int | None): keep only the first n images (sorted by path).

    Attributes (besides :class:`DetectionDataset`'s):
        orphan_labels (list[str]): label files in the label folder(s) that have no image.
        dropped_boxes (int): boxes left out because they have zero width or height in pixels.
    """

    def __init__(self, images: str, names: list[str], label_dir: str | None = None,
                 max_images: int | None = None) -> None:
        names = check_names(names, images)
        paths = list_images(images)
        if not paths:
            raise dataset_error(images, f"no images found (extensions {IMAGE_EXTENSIONS})")
        label_files = [label_path(p, label_dir) for p in paths]
        self.orphan_labels = self._orphan_labels(label_files)
        if self.orphan_labels:
            warnings.warn(f"{images}: {len(self.orphan_labels)} label files have no image and are ignored: "
                          f"{[os.path.basename(p) for p in self.orphan_labels[:10]]}", stacklevel=2)
        if max_images is not None:
            paths, label_files = paths[:max_images], label_files[:max_images]
        records, self.dropped_boxes = [], 0
        for image_id, (path, lbl) in enumerate(zip(paths, label_files)):
            height, width = image_size(path)
            if os.path.isfile(lbl):
                labels, cxcywh = parse_label_file(lbl, len(names))
            else:
                labels, cxcywh = np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
            boxes = normalised_cxcywh_to_xyxy(cxcywh, width, height)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            self.dropped_boxes += int((~keep).sum())
            records.append(ImageRecord(path, image_id, height, width, boxes[keep], labels[keep]))
        super().__init__(records, names, source=images)

    @staticmethod
    def _orphan_labels(label_files: list[str]) -> list[str]:
        """Label files (``*.txt``) in the folders of ``label_files`` that no image refers to."""
        expected = {os.path.normpath(p) for p in label_files}
        orphans = []
        for folder in sorted({os.path.dirname(p) for p in expected}):
            if os.path.isdir(folder):
                found = {os.path.normpath(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".txt")}
                orphans += sorted(found - expected)
        return orphans
