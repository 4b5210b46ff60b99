"""Check a whole dataset YAML before training: every label and every image header read once, every problem listed.

:func:`check_split` builds a split leniently (``strict=False``: bad files are recorded, not raised), then reads
each image's header (size, EXIF orientation, truncation) through a :class:`HeaderCache` keyed by file size and
mtime, compares its size as displayed (EXIF orientation applied) with the size the annotations state, counts the
EXIF-rotated images among the repairs, and summarises the split. :func:`format_report` prints
it; ``tools/check_data.py`` is the command line.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from detector.data.base import Problem, problem_from_error
from detector.data.files import ImageHeader, dataset_error, read_image_header, size_mismatch
from detector.data.dataset_yaml import DatasetSpec, build_dataset
from detector.errors import DatasetError

EXIF_REPAIR = "images EXIF-rotated"
"""The repair count of images whose EXIF orientation (2..8) is applied to pixels and size when they are read."""
IMAGE_BUCKETS = ((320, "<=320"), (640, "321-640"), (1280, "641-1280"), (float("inf"), ">1280"))
"""Images by their longest side in pixels."""
BOX_BUCKETS = ((32.0, "small <32²"), (96.0, "medium <96²"), (float("inf"), "large"))
"""Boxes by COCO's area ranges (square root of the area in pixels of the image as displayed)."""


class HeaderCache:
    """Image headers (or the error reading them) keyed by path, valid while the file's size and mtime hold.

    ``path`` None keeps it in memory only; otherwise it is read from and :meth:`save` d to that JSON file.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path, self.entries, self.hits = path, {}, 0
        if path and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    self.entries = json.load(f)
            except (OSError, ValueError):
                self.entries = {}

    def header(self, image: str) -> ImageHeader:
        """The header of ``image``; raises DatasetError naming it when unreadable (cached too)."""
        try:
            st = os.stat(image)
        except OSError:
            raise dataset_error(image, "image file not found") from None
        key, stamp = os.path.abspath(image), [st.st_size, st.st_mtime_ns]
        hit = self.entries.get(key)
        if hit is not None and hit[:2] == stamp:
            self.hits += 1
        else:
            try:
                h = read_image_header(image)
                hit = stamp + [h.height, h.width, h.orientation, h.format, None]
            except DatasetError as e:
                hit = stamp + [0, 0, 1, "", problem_from_error(e, image).message]
            self.entries[key] = hit
        if hit[6] is not None:
            raise dataset_error(image, hit[6])
        return ImageHeader(*hit[2:6])

    def save(self) -> None:
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.entries, f)
            os.replace(tmp, self.path)


@dataclass
class SplitReport:
    """What :func:`check_split` found in one split.

    Attributes:
        split, format, source (str): split name, dataset format, annotation file or folder.
        images (int): images read (those with fatal problems are not counted).
        boxes_per_class (dict[str, int]): training boxes per class name, every class listed.
        empty_images (int): images without a training box.
        image_sizes, box_sizes (dict[str, int]): counts per :data:`IMAGE_BUCKETS` / :data:`BOX_BUCKETS` label.
        problems (list[Problem]): fatal and non-fatal, each naming file and line or annotation id.
        repairs (dict[str, int]): count of each repair the dataset makes when it is read.
        same_as (str | None): name of an earlier split with the same spec (then not checked again).
    """

    split: str
    format: str
    source: str = ""
    images: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    empty_images: int = 0
    image_sizes: dict[str, int] = field(default_factory=dict)
    box_sizes: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    same_as: str | None = None

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]


def _bucket_counts(values: np.ndarray, buckets, inclusive: bool) -> dict[str, int]:
    """values (ndarray[n]) -> ``{label: count}`` of the first bucket whose upper bound each value is under
    (or equal to, if ``inclusive``)."""
    edges = np.asarray([b for b, _ in buckets[:-1]], dtype=np.float64)
    index = np.searchsorted(edges, values, side="left" if inclusive else "right")  # (n,)
    counts = np.bincount(index, minlength=len(buckets))
    return {label: int(c) for (_, label), c in zip(buckets, counts)}


def header_problems(records, cache: HeaderCache) -> tuple[list[Problem], int]:
    """Unreadable or truncated images and sizes (as displayed) differing from the annotations, all fatal; and the
    number of the other images whose EXIF orientation is applied when they are read (a repair, counted)."""
    problems, oriented = [], 0
    for r in records:
        try:
            h = cache.header(r.path)
        except DatasetError as e:
            problems.append(problem_from_error(e, r.path))
            continue
        if h.displayed_size != (r.height, r.width):
            err = size_mismatch(r.path, h.displayed_size, h.orientation, (r.height, r.width))
            problems.append(problem_from_error(err, r.path))
        elif h.orientation != 1:
            oriented += 1
    return problems, oriented


def check_split(spec: DatasetSpec, split: str, cache: HeaderCache | None = None) -> SplitReport:
    """Read one split of ``spec`` leniently and summarise it (see :class:`SplitReport`)."""
    cache = cache or HeaderCache()
    report = SplitReport(split, spec.format)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_dataset(spec, split, strict=False)
    except DatasetError as e:
        report.problems.append(problem_from_error(e, spec.file))
        return report
    report.source, report.repairs = ds.source, dict(ds.repairs)
    report.problems = list(ds.problems)
    report.problems += [Problem(p, "label file has no image; ignored", fatal=False)
                        for p in getattr(ds, "orphan_labels", [])]
    found, oriented = header_problems(ds.records, cache)
    report.problems += found
    if oriented:
        report.repairs[EXIF_REPAIR] = oriented
    bad = {p.file for p in report.problems if p.fatal}
    records = [r for r in ds.records if r.path not in bad]
    labels = np.concatenate([r.labels for r in records] + [np.zeros(0, np.int64)])  # (n,)
    boxes = np.concatenate([r.boxes for r in records] + [np.zeros((0, 4), np.float32)])  # (n, 4)
    per_class = np.bincount(labels, minlength=ds.num_classes)
    report.images = len(records)
    report.boxes_per_class = {n: int(c) for n, c in zip(ds.names, per_class)}
    report.empty_images = sum(1 for r in records if not len(r.labels))
    longest = np.asarray([max(r.height, r.width) for r in records], dtype=np.float64)
    report.image_sizes = _bucket_counts(longest, IMAGE_BUCKETS, inclusive=True)
    side = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))
    report.box_sizes = _bucket_counts(side.astype(np.float64), BOX_BUCKETS, inclusive=False)
    return report


def check_dataset(spec: DatasetSpec, cache: HeaderCache | None = None) -> list[SplitReport]:
    """A :class:`SplitReport` per split of ``spec`` (a split with the same spec as an earlier one is not re-read)."""
    reports, seen = [], {}
    for split, value in spec.splits.items():
        key = json.dumps(value, sort_keys=True)
        if key in seen:
            reports.append(SplitReport(split, spec.format, same_as=seen[key]))
            continue
        seen[key] = split
        reports.append(check_split(spec, split, cache))
    return reports


def format_report(spec: DatasetSpec, reports: list[SplitReport], max_classes: int = 100) -> str:
    """The human summary: per split counts and buckets, then every problem (fatal first)."""
    out = [f"{spec.file} ({spec.format}, root {spec.root})"]
    for r in reports:
        if r.same_as:
            out.append(f"  {r.split}: same files as {r.same_as}")
            continue
        boxes = sum(r.boxes_per_class.values())
        out.append(f"  {r.split} ({r.source}): {r.images} images, {boxes} boxes, {r.empty_images} empty images")
        if r.images:
            out.append("    images by longest side: " + ", ".join(f"{k}: {v}" for k, v in r.image_sizes.items()))
            out.append("    boxes by size: " + ", ".join(f"{k}: {v}" for k, v in r.box_sizes.items()))
            ranked = sorted(r.boxes_per_class.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{n} {c}" for n, c in ranked[:max_classes])
            more = f", ... {len(ranked) - max_classes} more" if len(ranked) > max_classes else ""
            out.append(f"    boxes per class: {shown}{more}")
            unused = [n for n, c in ranked if c == 0]
            if unused:
                out.append(f"    classes without boxes ({len(unused)}): {', '.join(unused)}")
        if r.repairs:
            out.append("    repaired when read: " + ", ".join(f"{v} {k}" for k, v in r.repairs.items()))
    problems = [p for r in reports for p in r.problems]
    fatal = [p for p in problems if p.fatal]
    notes = [p for p in problems if not p.fatal]
    out.append(f"{len(fatal)} fatal problems, {len(notes)} warnings")
    out += [f"  error: {p}" for p in fatal] + [f"  warning: {p}" for p in notes]
    return "\n".join(out)


def problem_counts(reports: list[SplitReport]) -> Counter:
    """``Counter({"fatal": n, "warning": m})`` over all splits."""
    return Counter("fatal" if p.fatal else "warning" for r in reports for p in r.problems)
