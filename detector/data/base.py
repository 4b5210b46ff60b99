"""The sample type every dataset yields, and the base class the three dataset formats share.

Box format: ``(x1, y1, x2, y2)`` in pixels of the image as displayed (before any resize),
float32, ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``. Class labels are contiguous
indices ``0..C-1``; ``dataset.cat_ids[label]`` is the category id used in the COCO ground truth.

"As displayed": with the image's EXIF orientation applied (see :mod:`detector.data.files`, which reads
image headers and pixels).
"""
from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detector.data.files import dataset_error, read_image_oriented, size_mismatch  # dataset_error: re-exported
from detector.errors import DatasetError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset file, located by file, line or annotation id.

    ``fatal`` problems stop a dataset from being built (all of them listed together); the others
    were repaired or are harmless and are reported as warnings.
    """

    file: str
    message: str
    line: int | None = None
    fatal: bool = True

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


def problem_from_error(err: DatasetError, fallback_file: str = "") -> Problem:
    """The fatal :class:`Problem` a DatasetError from :func:`dataset_error` stands for (its location split off)."""
    file, line = getattr(err, "file", None), getattr(err, "line", None)
    text = str(err)
    if not file:
        return Problem(fallback_file, text, None)
    prefix = f"{file}:{line}: " if line is not None else f"{file}: "
    return Problem(file, text.removeprefix(prefix), line)


def problems_error(problems: list[Problem], limit: int = 20) -> DatasetError:
    """One DatasetError listing ``problems`` (the first ``limit`` of them, then a count of the rest).

    A single problem gives the plain ``file:line: message`` text; ``file``/``line`` attributes are the first's.
    """
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more problems")
    head = "" if len(problems) == 1 else f"{len(problems)} problems in the dataset:\n"
    err = DatasetError(head + "\n".join(lines))
    err.file, err.line = problems[0].file, problems[0].line
    err.problems = list(problems)
    return err


def raise_fatal(problems: list[Problem]) -> None:
    """Raise :func:`problems_error` of the fatal ones among ``problems``, if any."""
    fatal = [p for p in problems if p.fatal]
    if fatal:
        raise problems_error(fatal)


@dataclass
class Sample:
    """One image and its boxes.

    Attributes:
        image (ndarray[H, W, 3] uint8): RGB pixels.
        boxes (ndarray[k, 4] float32): xyxy boxes in pixels of ``image``.
        labels (ndarray[k] int64): contiguous class index ``0..C-1`` of each box.
        image_id (int): id of the image in the dataset's COCO ground truth (``coco_gt()``).
        path (str): file the image was read from.
        orig_size (tuple[int, int]): ``(h, w)`` of the image as read (displayed, EXIF orientation applied);
            defaults to the shape of ``image``, and is carried unchanged through resizing and augmentation.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    path: str
    orig_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.orig_size is None:
            self.orig_size = (int(self.image.shape[0]), int(self.image.shape[1]))


@dataclass
class ImageRecord:
    """Annotation of one image, held in memory by a dataset (images are read lazily).

    Attributes:
        path (str): image file.
        image_id (int): id in the dataset's COCO ground truth.
        height, width (int): size of the image as displayed (EXIF orientation applied) in pixels.
        boxes (ndarray[k, 4] float32): xyxy pixels, training targets only (no crowd boxes).
        labels (ndarray[k] int64): contiguous class indices.
    """

    path: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def coco_from_dict(dataset: dict) -> COCO:
    """A pycocotools COCO object over an in-memory dataset dict (its index messages silenced)."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_names(names, source: str) -> list[str]:
    """Validate a class-name list: non-empty, strings, unique. Returns it as ``list[str]``."""
    if not isinstance(names, (list, tuple)) or not names:
        raise dataset_error(source, f"names must be a non-empty list of class names, got {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise dataset_error(source, f"names must be non-empty strings, got {bad!r}")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise dataset_error(source, f"names must be unique, repeated: {dup}")
    return list(names)


def warn_problems(source: str, problems: list[Problem], repairs: dict[str, int], limit: int = 10) -> None:
    """One warning for the non-fatal ``problems`` and the ``repairs`` made while reading ``source``."""
    notes = [p for p in problems if not p.fatal]
    done = {k: v for k, v in repairs.items() if v}
    if not notes and not done:
        return
    text = [f"{source}: " + ", ".join(f"{v} {k}" for k, v in done.items())] if done else [f"{source}:"]
    text += [f"  {p}" for p in notes[:limit]]
    if len(notes) > limit:
        text.append(f"  ... and {len(notes) - limit} more (tools/check_data.py lists them all)")
    warnings.warn("\n".join(text), stacklevel=3)


class DetectionDataset(Dataset):
    """Base of the COCO, YOLO and VOC datasets: a list of :class:`ImageRecord` plus class names.

    ``dataset[i]`` reads image ``i`` and returns a :class:`Sample` in original pixels.

    Attributes:
        records (list[ImageRecord]): one per image, in dataset order.
        names (list[str]): class name of each contiguous index.
        cat_ids (list[int]): COCO category id of each contiguous index (``index -> id``).
        source (str): the file or folder the annotations came from, for messages.
        problems (list[Problem]): what was found wrong while reading (with ``strict=False`` the fatal ones
            too, their images left out); empty for a clean dataset.
        repairs (dict[str, int]): count of each kind of repair made (``{"clipped coordinates": 3}``).
    """

    def __init__(self, records: list[ImageRecord], names: list[str], cat_ids: list[int] | None = None,
                 source: str = "", problems: list[Problem] | None = None,
                 repairs: dict[str, int] | None = None) -> None:
        self.problems = list(problems or [])
        self.repairs = {k: v for k, v in (repairs or {}).items() if v}
        self.records = list(records)
        self.names = list(names)
        self.cat_ids = list(cat_ids) if cat_ids is not None else list(range(1, len(names) + 1))
        if len(self.cat_ids) != len(self.names):
            raise ValueError(f"{len(self.cat_ids)} category ids for {len(self.names)} names")
        self.source = source
        self._images: list[np.ndarray] | None = None  # decoded images, once cache_images() has run

    # --- sizes and lookup -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    @property
    def num_boxes(self) -> int:
        """Number of training boxes over all images."""
        return int(sum(len(r.labels) for r in self.records))

    def cat_id_to_index(self) -> dict[int, int]:
        """``{coco category id: contiguous index}``, the inverse of ``cat_ids``."""
        return {cid: i for i, cid in enumerate(self.cat_ids)}

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        image = self.image(index)
        return Sample(image=image, boxes=record.boxes.copy(), labels=record.labels.copy(),
                      image_id=record.image_id, path=record.path)

    def image(self, index: int) -> np.ndarray:
        """Image ``index``: ``ndarray[H, W, 3]`` uint8 RGB, from the cache when :meth:`cache_images` has run."""
        return self._images[index] if self._images is not None else self.read_image(index)

    def read_image(self, index: int) -> np.ndarray:
        """Image ``index`` decoded from its file: ``ndarray[H, W, 3]`` uint8 RGB, EXIF orientation applied; a size
        other than the annotations' raises DatasetError naming the file."""
        record = self.records[index]
        image, orientation = read_image_oriented(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise size_mismatch(record.path, image.shape[:2], orientation, (record.height, record.width),
                                self.source)
        return image

    def cache_images(self) -> int:
        """Decode every image once and keep it in memory (``data.cache_images``); returns the bytes held.

        ``dataset[i]`` then returns the cached pixels (read-only; every transform makes new arrays), identical
        to a read from disk. DataLoader workers started afterwards by ``fork`` share the cache copy-on-write.
        """
        if self._images is None:
            images = [self.read_image(i) for i in range(len(self))]
            for image in images:
                image.flags.writeable = False  # a transform writing into a cached image would be a bug
            self._images = images
        return sum(image.nbytes for image in self._images)

    def subset(self, n: int) -> "DetectionDataset":
        """A shallow copy holding the first ``n`` images (all of them if ``n >= len(self)``)."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        other = copy.copy(self)
        other.records = self.records[:n]
        other._images = self._images[:n] if self._images is not None else None
        return other

    # --- evaluation -------------------------------------------------------------------------
    def coco_gt(self) -> COCO:
        """Ground truth of this dataset as a pycocotools COCO object, in original image pixels.

        Built in memory from ``records`` by :func:`detector.evaluation.coco.coco_gt_from_boxes` (the one place
        where boxes become COCO ``(x, y, w, h)``): ``category_id = cat_ids[label]``, ``area = w * h``,
        ``iscrowd = 0``.
        """
        from detector.evaluation.coco import coco_gt_from_boxes

        return coco_gt_from_boxes(
            image_ids=[r.image_id for r in self.records],
            image_sizes=[(r.height, r.width) for r in self.records],
            boxes=[torch.from_numpy(np.asarray(r.boxes, dtype=np.float32).reshape(-1, 4)) for r in self.records],
            labels=[torch.from_numpy(np.asarray(r.labels, dtype=np.int64)) for r in self.records],
            cat_ids=self.cat_ids,
            cat_names=self.names,
        )
