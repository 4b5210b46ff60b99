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
from dataclasses import dataclass, field

import numpy as np

from detector.data.base import (DetectionDataset, ImageRecord, Problem, check_names, dataset_error,
                                problem_from_error, raise_fatal, warn_problems)
from detector.data.files import read_image_header
from detector.errors import DatasetError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
COORD_TOLERANCE = 1e-3
"""How far outside ``[0, 1]`` a normalised coordinate may be (exporter rounding, e.g. ``1.0000001``) and still
be clipped into it and counted; beyond it the line is an error. 1e-3 is 0.64 px of a 640-px image."""


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


class _BadLine(ValueError):
    """A label line that cannot be used; its message says why and what would be valid."""


def _parse_line(line: str, num_classes: int) -> tuple[int, list[float], bool]:
    """One non-empty label line -> ``(class, [cx, cy, w, h] normalised, clipped)``; raises _BadLine.

    Coordinates within ``COORD_TOLERANCE`` outside ``[0, 1]`` are clipped into it (``clipped`` is True).
    """
    parts = line.split()
    try:
        values = np.asarray([float(v) for v in parts], dtype=np.float64)  # (n,)
    except ValueError:
        raise _BadLine(f"expected numbers 'class cx cy w h', got {line.strip()!r}") from None
    if not np.isfinite(values).all():
        bad = [p for p, v in zip(parts, values) if not np.isfinite(v)]
        raise _BadLine(f"non-finite value {bad[0]!r} (nan / inf); expected numbers 'class cx cy w h', "
                       f"got {line.strip()!r}")
    if not (len(values) == 5 or (len(values) >= 7 and len(values) % 2 == 1)):
        raise _BadLine(f"expected 5 values 'class cx cy w h' (or a class and >= 3 polygon points), "
                       f"got {len(values)}: {line.strip()!r}")
    cls, coords = values[0], values[1:]
    if cls != int(cls) or not 0 <= cls < num_classes:
        raise _BadLine(f"class {parts[0]!r} is not an integer in 0..{num_classes - 1}")
    if ((coords < -COORD_TOLERANCE) | (coords > 1 + COORD_TOLERANCE)).any():
        raise _BadLine(f"coordinates must be normalised to [0, 1] (tolerance {COORD_TOLERANCE}), "
                       f"got {line.strip()!r}")
    clipped = bool(((coords < 0) | (coords > 1)).any())
    coords = np.clip(coords, 0.0, 1.0)
    if len(coords) == 4:
        box = coords.tolist()
    else:
        xy = coords.reshape(-1, 2)  # (m, 2) polygon points
        (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
        box = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    return int(cls), box, clipped


@dataclass
class LabelFile:
    """A parsed YOLO label file.

    Attributes:
        labels (ndarray[k] int64): class of each usable line.
        boxes (ndarray[k, 4] float32): normalised ``(cx, cy, w, h)`` of each usable line, within ``[0, 1]``.
        clipped (int): lines whose coordinates were clipped into ``[0, 1]`` (within ``COORD_TOLERANCE``).
        problems (list[Problem]): one fatal problem per unusable line (or one for the whole file).
    """

    labels: np.ndarray
    boxes: np.ndarray
    clipped: int = 0
    problems: list[Problem] = field(default_factory=list)


def read_label_file(path: str, num_classes: int) -> LabelFile:
    """Read one YOLO label file, collecting a :class:`Problem` (file and line) for every bad line.

    The text is UTF-8, a leading byte-order mark (BOM) is accepted; other bytes are one problem
    naming the line of the first bad byte.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        problem = Problem(path, f"not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8 "
                                f"with lines 'class cx cy w h'", line)
        return LabelFile(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), 0, [problem])
    labels, boxes, clipped, problems = [], [], 0, []
    # Lines end at \n, \r\n or \r, as an editor numbers them (str.splitlines also breaks at \x0b, \x1c, \u2028...).
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            cls, box, was_clipped = _parse_line(line, num_classes)
        except _BadLine as e:
            problems.append(Problem(path, str(e), lineno))
            continue
        labels.append(cls)
        boxes.append(box)
        clipped += was_clipped
    return LabelFile(np.asarray(labels, dtype=np.int64), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                     clipped, problems)


def parse_label_file(path: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one YOLO label file -> ``(labels int64[k], boxes float32[k, 4] normalised cxcywh)``.

    Raises DatasetError naming the file and line of every malformed line (non-numeric or non-finite
    fields, a wrong field count, a class outside ``0..num_classes-1``, a coordinate outside ``[0, 1]``
    by more than ``COORD_TOLERANCE``) or of the first non-UTF-8 byte.
    """
    parsed = read_label_file(path, num_classes)
    raise_fatal(parsed.problems)
    return parsed.labels, parsed.boxes


def normalised_cxcywh_to_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """boxes (ndarray[k, 4]) normalised cxcywh -> ndarray[k, 4] float32 xyxy pixels, clipped to the image."""
    scale = np.asarray([width, height, width, height], dtype=np.float32)
    cxcy, wh = boxes[:, :2], boxes[:, 2:]
    xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1) * scale  # (k, 4)
    return np.clip(xyxy, 0, scale).astype(np.float32)


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file as displayed (EXIF orientation applied, as ultralytics' labels assume),
    from its header; DatasetError if unreadable or a truncated JPEG."""
    return read_image_header(path).displayed_size


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

    With ``strict`` (the default) every bad label line and unreadable image is listed in one DatasetError;
    with ``strict=False`` they are kept in ``problems`` and their images left out (for ``tools/check_data.py``).
    Coordinates just outside ``[0, 1]`` (within ``COORD_TOLERANCE``) are clipped and counted in ``repairs``.
    """

    def __init__(self, images: str, names: list[str], label_dir: str | None = None,
                 max_images: int | None = None, strict: bool = True) -> None:
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
        records, problems, clipped, dropped = [], [], 0, 0
        for image_id, (path, lbl) in enumerate(zip(paths, label_files)):
            record, image_problems, n_clipped = self._record(image_id, path, lbl, len(names))
            problems += image_problems
            clipped += n_clipped
            if record is not None:
                dropped += record.labels.size
                record = self._drop_degenerate(record)
                dropped -= record.labels.size
                records.append(record)
        if strict:
            raise_fatal(problems)
        self.dropped_boxes = dropped
        repairs = {"coordinates clipped into [0, 1]": clipped, "zero-area boxes dropped": dropped}
        warn_problems(images, problems, repairs)
        super().__init__(records, names, source=images, problems=problems, repairs=repairs)

    @staticmethod
    def _record(image_id: int, path: str, lbl: str, num_classes: int
                ) -> tuple[ImageRecord | None, list[Problem], int]:
        """The record of one image (None if its image or label file is unusable), its problems, clipped lines."""
        try:
            height, width = image_size(path)
        except DatasetError as e:
            return None, [problem_from_error(e, path)], 0
        if not os.path.isfile(lbl):
            return ImageRecord(path, image_id, height, width), [], 0
        parsed = read_label_file(lbl, num_classes)
        if any(p.fatal for p in parsed.problems):
            return None, parsed.problems, parsed.clipped
        boxes = normalised_cxcywh_to_xyxy(parsed.boxes, width, height)
        return ImageRecord(path, image_id, height, width, boxes, parsed.labels), parsed.problems, parsed.clipped

    @staticmethod
    def _drop_degenerate(record: ImageRecord) -> ImageRecord:
        """The record without boxes of zero width or height in pixels."""
        boxes = record.boxes
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # (k,)
        if keep.all():
            return record
        return ImageRecord(record.path, record.image_id, record.height, record.width, boxes[keep],
                           record.labels[keep])

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
