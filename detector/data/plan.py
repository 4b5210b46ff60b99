"""The training augmentation as a plan: every random draw and every box of :func:`augmented_sample`, no pixels.

``data.augment_backend: torch`` splits YOLOv5's augmentation in two. DataLoader workers run :func:`plan_sample`:
from the sample's seed they draw exactly what :func:`detector.data.pipeline.augmented_sample` draws, in the same
order (mosaic or not, the three other tiles, the mosaic centre, the affine, the HSV gains, the two flips), and
compute the boxes with the same functions (so the boxes are those of the numpy path), but instead of pixels they
return the geometry: for each tile, the dataset image it reads and the affine map from output pixels back to
that image's pixels. :mod:`detector.data.render` then draws a whole batch's pixels at once, on the training device,
from images decoded once and kept there.

Pixel convention: integer coordinates are pixel centres (OpenCV's). A resize from ``w`` to ``w'`` reads source
``(u + 0.5) * w / w' - 0.5`` for output ``u`` (``cv2.resize``); the warp reads canvas ``M^-1 (x, y)`` for output
``(x, y)`` (``cv2.warpAffine``). The composition is one bilinear read per output pixel instead of two (resize,
then warp), so pixels differ slightly from the numpy path's; boxes do not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.data.letterbox import letterbox_geometry
from detector.data.mosaic import mosaic_boxes, tile_regions
from detector.data.transforms import (AugmentConfig, affine_boxes, affine_matrix, sample_affine_params,
                                      sample_hsv_gains)

TILES = 4


@dataclass
class SamplePlan:
    """One training sample's augmentation without its pixels (all numpy, picklable).

    Attributes:
        tiles (ndarray[4] int64): dataset index read by each tile; -1 for none (a letterboxed sample uses tile 0).
        to_canvas (ndarray[2, 3] float64): output pixel -> canvas pixel (the inverse of the random affine).
        rects (ndarray[4, 4] float64): canvas rectangle ``(x1, y1, x2, y2)`` each tile covers (pixels ``x1..x2-1``).
        shift (ndarray[4, 2] float64): canvas minus resized-tile coordinates of each tile.
        ratio (ndarray[4, 2] float64): source pixels per resized-tile pixel, ``(w / w', h / h')``.
        src_size (ndarray[4, 2] int64): ``(w, h)`` of each tile's source image.
        hsv (ndarray[3] float64): HSV gains. flips (ndarray[2] bool): ``(up-down, left-right)``.
        boxes (ndarray[k, 4] float32), labels (ndarray[k] int64): the sample's final boxes, in output pixels.
        image_id (int), path (str), orig_size (tuple[int, int]): those of the sample's own image.
    """

    tiles: np.ndarray
    to_canvas: np.ndarray
    rects: np.ndarray
    shift: np.ndarray
    ratio: np.ndarray
    src_size: np.ndarray
    hsv: np.ndarray
    flips: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    path: str
    orig_size: tuple[int, int]


def _resized(record, size: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """``resize_long_side`` without pixels: ``((h', w'), (w / w', h / h'), boxes)`` of the record's image."""
    h, w = record.height, record.width
    r = size / max(h, w)
    if r == 1:
        return (h, w), np.ones(2), record.boxes.reshape(-1, 4).astype(np.float32)
    new_w, new_h = math.ceil(w * r), math.ceil(h * r)
    ratio = np.asarray([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    return (new_h, new_w), np.asarray([w / new_w, h / new_h]), (record.boxes.reshape(-1, 4) * ratio).astype(np.float32)


def flip_boxes(boxes: np.ndarray, size: int, horizontal: bool) -> np.ndarray:
    """``x -> S - x`` (or ``y``) with the two corners swapped: the flips of the numpy path on an ``S x S`` image."""
    out = boxes.copy()
    i, j = (0, 2) if horizontal else (1, 3)
    out[:, i], out[:, j] = size - boxes[:, j], size - boxes[:, i]
    return out


def plan_sample(records: list, index: int, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> SamplePlan:
    """The plan of sample ``index`` (``records``: the dataset's :class:`ImageRecord` list), drawing from ``rng``
    exactly as :func:`~detector.data.pipeline.augmented_sample` does."""
    tiles, rects = np.full(TILES, -1, dtype=np.int64), np.zeros((TILES, 4))
    shift, ratio, src_size = np.zeros((TILES, 2)), np.ones((TILES, 2)), np.ones((TILES, 2), dtype=np.int64)
    first = records[index]
    if rng.random() < cfg.mosaic:
        others = rng.integers(0, len(records), 3)
        centre = (int(rng.uniform(size / 2, 3 * size / 2)), int(rng.uniform(size / 2, 3 * size / 2)))
        params = sample_affine_params(rng, cfg)
        tiles[:] = [index, *(int(i) for i in others)]
        resized = [_resized(records[i], size) for i in tiles]
        regions = tile_regions(centre, [r[0] for r in resized], 2 * size)
        boxes, labels = mosaic_boxes([(r[2], records[i].labels) for r, i in zip(resized, tiles)], regions, 2 * size)
        for k, (((x1a, y1a, x2a, y2a), (x1b, y1b, _, _)), (_, tile_ratio, _)) in enumerate(zip(regions, resized)):
            rects[k], shift[k], ratio[k] = (x1a, y1a, x2a, y2a), (x1a - x1b, y1a - y1b), tile_ratio
            src_size[k] = records[tiles[k]].width, records[tiles[k]].height
        in_size = (2 * size, 2 * size)
    else:
        scale, (new_w, new_h), (left, top, _, _) = letterbox_geometry((first.height, first.width), size)
        boxes = (first.boxes.reshape(-1, 4) * scale + np.asarray([left, top, left, top], dtype=np.float32))
        boxes, labels = boxes.astype(np.float32), first.labels.copy()
        params = sample_affine_params(rng, cfg)
        tiles[0], rects[0], shift[0] = index, (left, top, left + new_w, top + new_h), (left, top)
        ratio[0], src_size[0] = (first.width / new_w, first.height / new_h), (first.width, first.height)
        in_size = (size, size)
    matrix = affine_matrix(params, in_size, (size, size))
    boxes, labels = affine_boxes(boxes, labels, params, matrix, (size, size))
    hsv = sample_hsv_gains(rng, cfg)
    flips = np.asarray([rng.random() < cfg.flipud, False])
    if flips[0]:
        boxes = flip_boxes(boxes, size, horizontal=False)
    flips[1] = rng.random() < cfg.fliplr
    if flips[1]:
        boxes = flip_boxes(boxes, size, horizontal=True)
    return SamplePlan(tiles=tiles, to_canvas=np.linalg.inv(matrix)[:2], rects=rects, shift=shift, ratio=ratio,
                      src_size=src_size, hsv=hsv, flips=flips, boxes=boxes.astype(np.float32), labels=labels,
                      image_id=first.image_id, path=first.path, orig_size=(first.height, first.width))
