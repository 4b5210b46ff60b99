"""Letterbox resize (keep aspect ratio, pad with 114) and its inverse for detections.

Box format: xyxy pixels. A letterboxed image of side ``S`` holds the original image scaled by
``scale`` and shifted by ``pad = (left, top)`` whole pixels, so an original point ``x`` lands at
``x * scale + left`` and a network-input point ``x'`` comes from ``(x' - left) / scale``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

PAD_VALUE = 114


@dataclass(frozen=True)
class ImageMeta:
    """How one network-input image relates to its original.

    Attributes:
        image_id (int): id in the dataset's ``coco_gt()``.
        orig_size (tuple[int, int]): ``(h, w)`` of the original image.
        scale (float): network-input pixels per original pixel (letterbox ratio).
        pad (tuple[float, float]): ``(left, top)`` padding in network-input pixels.
            For augmented training images (mosaic, random affine) there is no such mapping and
            ``scale`` and ``pad`` are NaN, so a mistaken inverse mapping shows up as NaN boxes.
    """

    image_id: int
    orig_size: tuple[int, int]
    scale: float
    pad: tuple[float, float]


def letterbox_geometry(orig_size: tuple[int, int], size: int, scaleup: bool = True
                       ) -> tuple[float, tuple[int, int], tuple[int, int, int, int]]:
    """Letterbox of an ``(h, w)`` image into ``size x size`` -> ``(scale, (new_w, new_h), (left, top, right, bottom))``.

    ``scale = min(size / h, size / w)`` (capped at 1 unless ``scaleup``); the resized image is
    ``round(w * scale) x round(h * scale)``; the padding ``d = size - new`` is split as YOLOv5 does,
    ``round(d / 2 - 0.1)`` before and ``round(d / 2 + 0.1)`` after (the odd pixel goes after).
    """
    h, w = orig_size
    scale = min(size / h, size / w)
    if not scaleup:
        scale = min(scale, 1.0)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    return scale, (new_w, new_h), (left, top, right, bottom)


def letterbox(image: np.ndarray, boxes: np.ndarray, size: int, scaleup: bool = True,
              interpolation: int | None = None) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to ``size x size`` with gray 114.

    Args:
        image (ndarray[H, W, 3] uint8), boxes (ndarray[k, 4] float32 xyxy px of ``image``).
        size (int): output side. scaleup (bool): allow scale > 1 (small images are enlarged).
        interpolation: OpenCV flag; default INTER_AREA when shrinking, INTER_LINEAR when enlarging.

    Returns:
        ``(image ndarray[size, size, 3] uint8, boxes ndarray[k, 4] float32, scale, (left, top))``.
    """
    scale, (new_w, new_h), (left, top, right, bottom) = letterbox_geometry(image.shape[:2], size, scaleup)
    if (new_w, new_h) != (image.shape[1], image.shape[0]):
        if interpolation is None:
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                               value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    boxes = (boxes * scale + np.asarray([left, top, left, top], dtype=np.float32)).astype(np.float32)
    return image, boxes, scale, (left, top)


def resize_long_side(image: np.ndarray, boxes: np.ndarray, size: int,
                     interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the longer side is ``size`` (YOLOv5's ``load_image``), no padding.

    The new size is ``ceil(w * r) x ceil(h * r)`` with ``r = size / max(h, w)``; boxes
    (ndarray[k, 4] xyxy px) are scaled by the actual per-axis ratios ``new_w / w`` and ``new_h / h``.
    """
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return image, boxes
    new_w, new_h = math.ceil(w * r), math.ceil(h * r)
    image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    ratio = np.asarray([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    return image, (boxes * ratio).astype(np.float32)


def scale_boxes_to_original(boxes: Tensor | np.ndarray, meta: ImageMeta) -> Tensor | np.ndarray:
    """Map boxes from network-input pixels back to original-image pixels (inverse letterbox).

    Args:
        boxes (Tensor[k, 4] or ndarray[k, 4]): xyxy in network-input pixels (extra trailing
            columns are not allowed; slice detections ``[:, :4]`` first).
        meta (ImageMeta): the image's letterbox scale and padding.

    Returns:
        Same type and shape: ``(boxes - (left, top, left, top)) / scale`` clipped to
        ``[0, w] x [0, h]`` of ``meta.orig_size``. A new array; the input is not modified.
    """
    left, top = meta.pad
    h, w = meta.orig_size
    if isinstance(boxes, Tensor):
        offset = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
        upper = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        out = (boxes - offset) / meta.scale
        return torch.minimum(out.clamp(min=0), upper)
    offset = np.asarray([left, top, left, top], dtype=boxes.dtype)
    out = (boxes - offset) / meta.scale
    return np.clip(out, 0, np.asarray([w, h, w, h], dtype=boxes.dtype)).astype(boxes.dtype)
