"""YOLOv5's 4-image mosaic.

Four images, each resized so its longer side is ``S``, are tiled on a ``2S x 2S`` canvas of gray
114 around a random centre ``(xc, yc)`` drawn from ``U(S/2, 3S/2)``: image 0 ends at the centre
from the top left, 1 starts there to the top right, 2 to the bottom left, 3 to the bottom right.
Parts that fall outside the canvas are cut. The canvas then goes through the random affine with
border ``-S/2``, which crops it back to ``S x S``.

Box format: xyxy pixels, float32.
"""
from __future__ import annotations

import numpy as np

from detector.data.base import Sample
from detector.data.letterbox import PAD_VALUE, resize_long_side
from detector.data.transforms import AffineParams, random_affine


def tile_regions(centre: tuple[int, int], tile_sizes: list[tuple[int, int]], canvas: int
                 ) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """Where each of the 4 tiles goes.

    Returns, per tile, ``((x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b))``: the rectangle on the canvas
    and the same-sized rectangle of the tile that is pasted there.

    Args:
        centre (tuple[int, int]): ``(xc, yc)`` on the canvas.
        tile_sizes (list[tuple[int, int]]): ``(h, w)`` of the 4 tiles (top-left, top-right,
            bottom-left, bottom-right).
        canvas (int): side of the square canvas (``2S``).

    Both rectangles have the same size; the tile region is the part that fits on the canvas.
    """
    xc, yc = centre
    regions = []
    for i, (h, w) in enumerate(tile_sizes):
        if i == 0:
            a = (max(xc - w, 0), max(yc - h, 0), xc, yc)
            b = (w - (a[2] - a[0]), h - (a[3] - a[1]), w, h)
        elif i == 1:
            a = (xc, max(yc - h, 0), min(xc + w, canvas), yc)
            b = (0, h - (a[3] - a[1]), min(w, a[2] - a[0]), h)
        elif i == 2:
            a = (max(xc - w, 0), yc, xc, min(canvas, yc + h))
            b = (w - (a[2] - a[0]), 0, w, min(a[3] - a[1], h))
        else:
            a = (xc, yc, min(xc + w, canvas), min(canvas, yc + h))
            b = (0, 0, min(w, a[2] - a[0]), min(a[3] - a[1], h))
        regions.append((a, b))
    return regions


def mosaic_canvas(tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]], centre: tuple[int, int], size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste 4 ``(image, boxes, labels)`` tiles on a ``2S x 2S`` canvas around ``centre``.

    Returns ``(canvas ndarray[2S, 2S, 3] uint8, boxes ndarray[k, 4] float32, labels ndarray[k])``:
    boxes shifted by each tile's offset, clipped to the canvas, and those left with zero width or
    height (entirely in a cut-off part) removed.
    """
    canvas_side = 2 * size
    canvas = np.full((canvas_side, canvas_side, 3), PAD_VALUE, dtype=np.uint8)
    regions = tile_regions(centre, [t[0].shape[:2] for t in tiles], canvas_side)
    for (image, _, _), ((x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b)) in zip(tiles, regions):
        canvas[y1a:y2a, x1a:x2a] = image[y1b:y2b, x1b:x2b]
    boxes, labels = mosaic_boxes([(t[1], t[2]) for t in tiles], regions, canvas_side)
    return canvas, boxes, labels


def mosaic_boxes(tiles: list[tuple[np.ndarray, np.ndarray]], regions, canvas_side: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of :func:`mosaic_canvas` alone: each tile's ``(boxes, labels)`` (boxes in the resized tile's
    pixels) moved by its region's offset (``regions`` from :func:`tile_regions`), clipped to the canvas, and those
    left with zero width or height removed -> ``(boxes ndarray[k, 4] float32, labels ndarray[k] int64)``."""
    all_boxes, all_labels = [], []
    for (boxes, labels), ((x1a, y1a, _, _), (x1b, y1b, _, _)) in zip(tiles, regions):
        shift = np.asarray([x1a - x1b, y1a - y1b] * 2, dtype=np.float32)
        all_boxes.append(boxes.reshape(-1, 4) + shift)
        all_labels.append(labels)
    boxes = np.clip(np.concatenate(all_boxes), 0, canvas_side).astype(np.float32)  # (k, 4)
    labels = np.concatenate(all_labels).astype(np.int64)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def mosaic(samples: list[Sample], size: int, centre: tuple[int, int], params: AffineParams
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mosaic of 4 samples, then the random affine cropping it to ``size x size``.

    Args:
        samples (list[Sample]): 4 samples in original pixels, the first being the mosaic's own.
        size (int): output side ``S`` (even).
        centre (tuple[int, int]): mosaic centre ``(xc, yc)`` on the ``2S`` canvas, each in ``[S/2, 3S/2]``.
        params (AffineParams): the affine draw applied to the canvas.

    Returns:
        ``(image ndarray[S, S, 3] uint8, boxes ndarray[k, 4] float32 xyxy in [0, S], labels ndarray[k] int64)``.
    """
    if size % 2:
        raise ValueError(f"mosaic size must be even (a multiple of the network stride), got {size}")
    tiles = []
    for sample in samples:
        image, boxes = resize_long_side(sample.image, sample.boxes, size)
        tiles.append((image, boxes, sample.labels))
    canvas, boxes, labels = mosaic_canvas(tiles, centre, size)
    return random_affine(canvas, boxes, labels, params, border=(-size // 2, -size // 2))
