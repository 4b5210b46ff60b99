"""Batch network-input samples into tensors: images, flat targets ``[n, 6]`` and per-image metadata."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from detector.data.base import Sample
from detector.data.letterbox import ImageMeta


class Batch(NamedTuple):
    """A collated batch (unpacks as ``images, targets, metas``).

    Attributes:
        images (Tensor[B, 3, S, S] float32): RGB in [0, 1].
        targets (Tensor[n, 6] float32): ``(image_index, class, x1, y1, x2, y2)``, boxes in
            network-input pixels, rows grouped by image in batch order.
        metas (list[ImageMeta]): one per image, to map detections back to original pixels.
    """

    images: Tensor
    targets: Tensor
    metas: list[ImageMeta]


def collate(items: list[tuple[Sample, ImageMeta]]) -> Batch:
    """Collate ``(Sample, ImageMeta)`` pairs whose images all have the same ``S x S`` size -> :class:`Batch`."""
    samples = [s for s, _ in items]
    images = np.stack([np.ascontiguousarray(s.image) for s in samples])  # (B, S, S, 3) uint8
    images = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S)
    counts = np.asarray([len(s.labels) for s in samples], dtype=np.int64)
    image_index = np.repeat(np.arange(len(samples), dtype=np.float32), counts)  # (n,)
    labels = np.concatenate([s.labels for s in samples]).astype(np.float32) if samples else np.zeros(0, np.float32)
    boxes = np.concatenate([s.boxes.reshape(-1, 4) for s in samples]).astype(np.float32) if samples \
        else np.zeros((0, 4), np.float32)
    targets = np.concatenate([image_index[:, None], labels[:, None], boxes], axis=1)  # (n, 6)
    return Batch(images=images.contiguous(), targets=torch.from_numpy(targets), metas=[m for _, m in items])
