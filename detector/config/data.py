"""Schema sections of the input pipeline: ``data`` (the dataset and loading) and ``augment``."""
from __future__ import annotations

from dataclasses import dataclass

from detector.config.fields import _in_range, _multiple_of, _non_empty, _opt


@dataclass
class DataConfig:
    """The dataset and how images are loaded."""

    dataset: str = _opt("coco128", check=_non_empty)
    """A bare name (``coco128`` = ``data/coco128.yaml`` in the repository) or a path to a dataset YAML."""
    img_size: int = _opt(640, check=_multiple_of(32))
    """Square network input size in pixels (letterbox / mosaic target); a multiple of 32."""
    max_images: int | None = _opt(None, check=_in_range(1))
    """Use only the first n images of each split (quick experiments); None = all."""
    workers: int = _opt(2, check=_in_range(0))
    """DataLoader worker processes; 0 loads in the main process."""
    cache_images: bool = _opt(False)
    """Decode every image once and keep it in memory as uint8 (YOLOv5's ``--cache ram``): the sum of height x width
    x 3 bytes over the training and validation images (BCCD 0.3 GB, COCO train2017 about 110 GB). Same pixels, same
    results; saves the JPEG decode of every mosaic tile."""
    augment_backend: str = _opt("numpy", choices=("numpy", "torch"))
    """Where training images are augmented. ``numpy``: YOLOv5's pipeline in the DataLoader workers (OpenCV).
    ``torch``: the workers draw the same random parameters and compute the same boxes, and the pixels are drawn a
    batch at a time on the training device (``detector/data/render.py``) from images decoded once and kept there
    (the dataset must fit in that device's memory). Pixels differ slightly (one bilinear read instead of a resize
    then a warp; HSV on floats), which can shift mAP: pin it in an ablation's config."""
    worker_timeout: float = _opt(600.0, check=_in_range(0.0, 1e6))
    """Seconds to wait for a worker's batch before stopping with an error naming this key (a worker stuck on a hung
    read or a deadlock); 0 waits forever. No effect with ``workers: 0``."""


@dataclass
class AugmentConfig:
    """Training augmentation gains and probabilities (YOLOv5 ``hyp.scratch-low``)."""

    hsv_h: float = _opt(0.015, check=_in_range(0.0, 1.0))
    """Hue gain: OpenCV's hue (0..179) is scaled by a factor in ``[1 - hsv_h, 1 + hsv_h]`` (YOLOv5)."""
    hsv_s: float = _opt(0.7, check=_in_range(0.0, 1.0))
    """Saturation gain: saturation is scaled by a factor in ``[1 - hsv_s, 1 + hsv_s]``."""
    hsv_v: float = _opt(0.4, check=_in_range(0.0, 1.0))
    """Value (brightness) gain: value is scaled by a factor in ``[1 - hsv_v, 1 + hsv_v]``."""
    degrees: float = _opt(0.0, check=_in_range(0.0, 180.0))
    """Random rotation of up to +/- this many degrees."""
    translate: float = _opt(0.1, check=_in_range(0.0, 1.0))
    """Random translation of up to +/- this fraction of the image size."""
    scale: float = _opt(0.5, check=_in_range(0.0, 1.0, hi_open=True))
    """Random scale factor in ``[1 - scale, 1 + scale]``."""
    shear: float = _opt(0.0, check=_in_range(0.0, 90.0, hi_open=True))
    """Random shear of up to +/- this many degrees."""
    fliplr: float = _opt(0.5, check=_in_range(0.0, 1.0))
    """Probability of a left-right flip."""
    flipud: float = _opt(0.0, check=_in_range(0.0, 1.0))
    """Probability of an up-down flip."""
    mosaic: float = _opt(1.0, check=_in_range(0.0, 1.0))
    """Probability of building a training image as a 4-image mosaic."""
