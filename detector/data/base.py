"""The sample type every dataset yields, and the base class the three dataset formats share.

Box format: ``(x1, y1, x2, y2)`` in pixels of the image as stored on disk (before any resize),
float32, ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``. Class labels are contiguous
indices ``0..C-1``; ``dataset.cat_ids[label]`` is the category id used in the COCO ground truth.

Images are decoded with OpenCV ignoring EXIF orientation, so pixels are the stored array that
COCO's ``width``/``height`` and box coordinates refer to, and returned as RGB uint8.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detector.errors import DatasetError


def dataset_error(file: str, message: str, line: int | None = None) -> DatasetError:
    """A :class:`DatasetError` whose message starts with ``file:line:`` (or ``file:``).

    The location is also kept as attributes ``file`` and ``line`` for callers that want it.
    """
    where = f"{file}:{line}" if line is not None else f"{file}"
    err = DatasetError(f"{where}: {message}")
    err.file, err.line = file, line
    return err


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
        orig_size (tuple[int, int]): ``(h, w)`` of the image as stored on disk; defaults to the
            shape of ``image``, and is carried unchanged through resizing and augmentation.
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
        height, width (int): size of the stored image in pixels.
        boxes (ndarray[k, 4] float32): xyxy pixels, training targets only (no crowd boxes).
        labels (ndarray[k] int64): contiguous class indices.
    """

    path: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
EXIF_ORIENTATION = 0x0112


def _decode_fails(path: str) -> str | None:
    """PIL's full decode of ``path``: None if it decodes, else its error text (e.g. 'image file is truncated')."""
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError) as e:
        return str(e) or type(e).__name__
    return None


def truncation_error(path: str, head: bytes, tail: bytes) -> str | None:
    """Why a JPEG whose first and last two bytes are ``head``/``tail`` is truncated, else None.

    A JPEG ends with the EOI marker ``FF D9``; a file that starts like a JPEG but does not end with it is
    decoded in full once (some cameras append data after EOI) and reported only if that decode fails.
    """
    if head != JPEG_START or tail == JPEG_END:
        return None
    reason = _decode_fails(path)
    return None if reason is None else f"truncated JPEG (no end marker; {reason}); re-export or remove it"


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`read_image_header` learns without decoding pixels: stored ``height``, ``width``, EXIF
    ``orientation`` (1 = upright; 5..8 swap width and height when applied), and the file ``format``."""

    height: int
    width: int
    orientation: int = 1
    format: str = ""


def read_image_header(path: str) -> ImageHeader:
    """Size, EXIF orientation and format of an image file from its header (plus a truncation check for JPEGs).

    Raises DatasetError naming the file when it is missing, empty, not an image, or a truncated JPEG.
    """
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            width, height = im.size
            orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
            fmt = im.format or ""
            f.seek(0)
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            tail = f.read(2)
    except FileNotFoundError:
        raise dataset_error(path, "image file not found") from None
    except (OSError, ValueError, SyntaxError) as e:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        what = "empty file (0 bytes)" if size == 0 else f"not an image PIL can read ({e})"
        raise dataset_error(path, f"cannot read image header: {what}") from None
    truncated = truncation_error(path, head, tail)
    if truncated:
        raise dataset_error(path, truncated)
    return ImageHeader(int(height), int(width), orientation, fmt)


def read_image_rgb(path: str) -> np.ndarray:
    """Read an image file -> ndarray[H, W, 3] uint8 RGB (EXIF orientation ignored).

    Raises DatasetError naming the file when it is missing, cannot be decoded, or is a truncated JPEG
    (which OpenCV would decode with a grey bottom and only a libjpeg warning naming no file).
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)  # (nbytes,)
    except OSError:
        data = np.zeros(0, np.uint8)
    truncated = truncation_error(path, data[:2].tobytes(), data[-2:].tobytes())
    if truncated:
        raise dataset_error(path, truncated)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise dataset_error(path, "cannot read image (missing file or not an image OpenCV can decode)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
        image = read_image_rgb(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise dataset_error(
                record.path,
                f"image is {image.shape[1]}x{image.shape[0]} (w x h) but the annotations "
                f"({self.source}) say {record.width}x{record.height}",
            )
        return Sample(image=image, boxes=record.boxes.copy(), labels=record.labels.copy(),
                      image_id=record.image_id, path=record.path)

    def subset(self, n: int) -> "DetectionDataset":
        """A shallow copy holding the first ``n`` images (all of them if ``n >= len(self)``)."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        other = copy.copy(self)
        other.records = self.records[:n]
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
