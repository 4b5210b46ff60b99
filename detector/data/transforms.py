"""YOLOv5's training augmentations: random affine, HSV gains and flips, on numpy images.

Images are ``ndarray[H, W, 3] uint8 RGB``; boxes ``ndarray[k, 4] float32`` xyxy pixels; labels
``ndarray[k] int64``. Every random draw comes from the ``numpy.random.Generator`` passed in, so a
sample is a pure function of (dataset, index, seed).

HSV: YOLOv5 multiplies the H, S and V channels by random gains ``1 + U(-1, 1) * (hsv_h, hsv_s,
hsv_v)`` through lookup tables (hue wrapping at 180, S and V clipped at 255).
albumentations' ``HueSaturationValue`` *adds* random shifts to H, S and V, and ``ColorJitter``
scales RGB (not V), blends with gray for saturation and shifts hue additively, so neither has
the same semantics (a multiplicative V gain keeps black black; an additive shift does not):
HSV is therefore done with cv2 lookup tables, as YOLOv5 does. Flips have identical semantics
(``x -> W - x``) and use albumentations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import albumentations as A
import cv2
import numpy as np

from detector.data.letterbox import PAD_VALUE


@dataclass
class AugmentConfig:
    """Training augmentation parameters, named and defaulted as YOLOv5's ``hyp.scratch-low``.

    Attributes:
        hsv_h, hsv_s, hsv_v (float): HSV gain amplitudes, each channel scaled by ``1 + U(-g, g)``.
        degrees (float): rotation drawn from ``U(-degrees, degrees)``.
        translate (float): translation drawn from ``U(-translate, translate)`` times the output side.
        scale (float): zoom drawn from ``U(1 - scale, 1 + scale)``.
        shear (float): shear angles (degrees) drawn from ``U(-shear, shear)`` for x and y.
        fliplr, flipud (float): probability of a horizontal / vertical flip.
        mosaic (float): probability of a 4-image mosaic instead of a single letterboxed image.
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    fliplr: float = 0.5
    flipud: float = 0.0
    mosaic: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"AugmentConfig.{f.name} must be a number >= 0, got {value!r}")
        for name in ("fliplr", "flipud", "mosaic", "hsv_h", "hsv_s", "hsv_v", "scale", "translate"):
            if getattr(self, name) > 1:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")


# --- random affine ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AffineParams:
    """One draw of the random affine: rotation ``angle`` (degrees, counter-clockwise on screen),
    ``scale``, ``shear_x``/``shear_y`` (degrees) and the output position ``(tx, ty)`` of the input
    centre as a fraction of the output width / height (0.5 = centred)."""

    angle: float = 0.0
    scale: float = 1.0
    shear_x: float = 0.0
    shear_y: float = 0.0
    tx: float = 0.5
    ty: float = 0.5


def sample_affine_params(rng: np.random.Generator, cfg: AugmentConfig) -> AffineParams:
    """Draw :class:`AffineParams` from ``cfg`` (YOLOv5's order: angle, scale, shear x, y, translation x, y)."""
    angle = rng.uniform(-cfg.degrees, cfg.degrees)
    scale = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    shear_x = rng.uniform(-cfg.shear, cfg.shear)
    shear_y = rng.uniform(-cfg.shear, cfg.shear)
    tx = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate)
    ty = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate)
    return AffineParams(angle, scale, shear_x, shear_y, tx, ty)


def affine_matrix(params: AffineParams, in_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """3x3 matrix taking input pixels to output pixels: ``T @ Shear @ RotScale @ Centre``.

    The input centre ``(w_in / 2, h_in / 2)`` is moved to the origin, rotated by ``angle`` and
    scaled by ``scale`` (as ``cv2.getRotationMatrix2D`` about the origin), sheared, and moved to
    ``(tx * w_out, ty * h_out)``. Sizes are ``(h, w)``.
    """
    h_in, w_in = in_size
    h_out, w_out = out_size
    centre = np.array([[1, 0, -w_in / 2], [0, 1, -h_in / 2], [0, 0, 1]], dtype=np.float64)
    a = math.radians(params.angle)
    c, s = params.scale * math.cos(a), params.scale * math.sin(a)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=np.float64)
    shear = np.array([[1, math.tan(math.radians(params.shear_x)), 0],
                      [math.tan(math.radians(params.shear_y)), 1, 0], [0, 0, 1]], dtype=np.float64)
    move = np.array([[1, 0, params.tx * w_out], [0, 1, params.ty * h_out], [0, 0, 1]], dtype=np.float64)
    return move @ shear @ rot @ centre


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """boxes (ndarray[k, 4] xyxy) through a 3x3 affine ``matrix`` -> ndarray[k, 4] float32 xyxy.

    The new box is the bounding box of the 4 transformed corners, clipped to ``out_size`` ``(h, w)``.
    """
    h, w = out_size
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                        np.stack([x1, y2], -1), np.stack([x2, y2], -1)], axis=1)  # (k, 4, 2)
    moved = corners @ matrix[:2, :2].T + matrix[:2, 2]  # (k, 4, 2)
    out = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)  # (k, 4)
    return np.clip(out, 0, [w, h, w, h]).astype(np.float32)


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2.0, ar_thr: float = 100.0,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """YOLOv5's filter of augmented boxes -> ndarray[k] bool, True where the box is kept.

    Args:
        before (ndarray[k, 4]): xyxy boxes before augmentation, already multiplied by the zoom.
        after (ndarray[k, 4]): the same boxes after augmentation and clipping.

    A box is kept when its width and height are > ``wh_thr`` px, it keeps more than ``area_thr``
    of its (zoomed) area, and its aspect ratio ``max(w/h, h/w)`` is below ``ar_thr``.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_affine(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, params: AffineParams,
                  border: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp an image and its boxes by :func:`affine_matrix` (YOLOv5's ``random_perspective`` without perspective).

    Args:
        image (ndarray[H, W, 3] uint8), boxes (ndarray[k, 4] xyxy px), labels (ndarray[k] int64).
        params (AffineParams): the draw (see :func:`sample_affine_params`).
        border (tuple[int, int]): ``(top/bottom, left/right)`` added to each side of the output;
            the output is ``(H + 2 * border[0], W + 2 * border[1])``, so a mosaic canvas of ``2S``
            with border ``-S // 2`` gives an ``S x S`` output.

    Returns:
        ``(image, boxes ndarray[k', 4] float32 clipped to the output, labels ndarray[k'])`` with
        boxes failing :func:`box_candidates` removed. Empty space is filled with 114.
    """
    out_size = (image.shape[0] + 2 * border[0], image.shape[1] + 2 * border[1])
    matrix = affine_matrix(params, image.shape[:2], out_size)
    if border != (0, 0) or not np.allclose(matrix, np.eye(3)):
        image = cv2.warpAffine(image, matrix[:2], dsize=(out_size[1], out_size[0]),
                               borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    return (image, *affine_boxes(boxes, labels, params, matrix, out_size))


def affine_boxes(boxes: np.ndarray, labels: np.ndarray, params: AffineParams, matrix: np.ndarray,
                 out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of :func:`random_affine` alone: through ``matrix`` (:func:`affine_matrix` of ``params``) into an
    ``out_size`` ``(h, w)`` output, those failing :func:`box_candidates` removed."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32), labels
    new = warp_boxes(boxes, matrix, out_size)
    keep = box_candidates(boxes * params.scale, new)
    return new[keep], labels[keep]


# --- colour -----------------------------------------------------------------------------------
def sample_hsv_gains(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Gains ndarray[3] float64 for (H, S, V): ``1 + U(-1, 1) * (hsv_h, hsv_s, hsv_v)``."""
    return rng.uniform(-1, 1, 3) * np.array([cfg.hsv_h, cfg.hsv_s, cfg.hsv_v]) + 1


def apply_hsv_gains(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Scale the OpenCV HSV channels of an RGB uint8 image by ``gains = (gh, gs, gv)`` (YOLOv5's augment_hsv).

    Lookup tables: ``H -> (H * gh) mod 180``, ``S -> clip(S * gs, 0, 255)``, ``V -> clip(V * gv, 0, 255)``,
    truncated to uint8. Returns a new ndarray[H, W, 3] uint8 RGB; gains (1, 1, 1) return the input.
    """
    if np.all(gains == 1):
        return image
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


# --- flips ------------------------------------------------------------------------------------
def make_flip(horizontal: bool) -> A.Compose:
    """An albumentations pipeline that always flips (the coin is tossed by the caller's generator)."""
    flip = A.HorizontalFlip(p=1.0) if horizontal else A.VerticalFlip(p=1.0)
    return A.Compose([flip], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                      min_area=0.0, min_visibility=0.0, clip=True))


def apply_flip(flip: A.Compose, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a :func:`make_flip` pipeline: horizontal ``x -> W - x`` (x1 and x2 swap roles), vertical likewise in y.

    Boxes (ndarray[k, 4] xyxy px, k >= 0) must have positive width and height.
    """
    out = flip(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
    boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    return out["image"], boxes, np.asarray(out["labels"], dtype=np.int64).reshape(-1)
