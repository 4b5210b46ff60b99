"""Per-sample pipelines: a dataset's original-pixel samples -> ``S x S`` network inputs.

Training with augmentation (YOLOv5's order): mosaic with probability ``mosaic`` (else a
letterboxed single image), random affine, HSV gains, vertical flip, horizontal flip.
Without augmentation (validation): letterbox only, with the :class:`ImageMeta` to map back.

Randomness: a training sample is a pure function of ``(index, seed)``; the seed comes from the
loader's sampler (drawn from a ``torch.Generator``), so the result does not depend on the number
of workers, on which worker builds the sample, or on global random state.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from torch.utils.data import Dataset

from detector.data.base import Sample
from detector.data.letterbox import ImageMeta, letterbox
from detector.data.mosaic import mosaic
from detector.data.plan import plan_sample
from detector.data.transforms import (AugmentConfig, apply_flip, apply_hsv_gains, make_flip, random_affine,
                                      sample_affine_params, sample_hsv_gains)
from detector.data.workers import SampleError, sample_error


def _tile(dataset: Dataset, index: int, first: int) -> Sample:
    """``dataset[index]`` read as a mosaic tile of sample ``first``; a failure names the tile (SampleError)."""
    try:
        return dataset[index]
    except Exception as err:
        raise sample_error(dataset, index, err, f"a mosaic tile of sample {first}") from err


def augmented_sample(dataset: Dataset, index: int, size: int, cfg: AugmentConfig, rng: np.random.Generator,
                     flips: tuple | None = None) -> Sample:
    """One training sample: ``Sample`` with ``image ndarray[S, S, 3]`` and boxes in its pixels.

    ``image_id``, ``path`` and ``orig_size`` are those of ``dataset[index]`` (the mosaic's first tile).
    ``flips`` is ``(make_flip(False), make_flip(True))``, built once by the caller; made here if None.
    """
    vflip, hflip = flips if flips is not None else (make_flip(False), make_flip(True))
    first = dataset[index]
    if rng.random() < cfg.mosaic:
        others = rng.integers(0, len(dataset), 3)
        centre = (int(rng.uniform(size / 2, 3 * size / 2)), int(rng.uniform(size / 2, 3 * size / 2)))
        params = sample_affine_params(rng, cfg)
        samples = [first] + [_tile(dataset, int(i), index) for i in others]
        image, boxes, labels = mosaic(samples, size, centre, params)
    else:
        image, boxes, _, _ = letterbox(first.image, first.boxes, size, scaleup=True, interpolation=cv2.INTER_LINEAR)
        params = sample_affine_params(rng, cfg)
        image, boxes, labels = random_affine(image, boxes, first.labels, params)
    image = apply_hsv_gains(image, sample_hsv_gains(rng, cfg))
    if rng.random() < cfg.flipud:
        image, boxes, labels = apply_flip(vflip, image, boxes, labels)
    if rng.random() < cfg.fliplr:
        image, boxes, labels = apply_flip(hflip, image, boxes, labels)
    return Sample(image=image, boxes=boxes, labels=labels, image_id=first.image_id, path=first.path,
                  orig_size=first.orig_size)


def letterboxed_sample(dataset: Dataset, index: int, size: int) -> tuple[Sample, ImageMeta]:
    """One validation sample: letterboxed to ``S x S`` (scale-up allowed) and its :class:`ImageMeta`."""
    return letterbox_sample(dataset[index], size)


def letterbox_sample(s: Sample, size: int) -> tuple[Sample, ImageMeta]:
    """A sample in original pixels -> the evaluation input: letterboxed to ``S x S`` (scale-up allowed), and its
    :class:`ImageMeta` (also what :class:`detector.inference.Predictor` does to an image file)."""
    image, boxes, scale, pad = letterbox(s.image, s.boxes, size, scaleup=True)
    meta = ImageMeta(image_id=s.image_id, orig_size=s.orig_size, scale=scale, pad=(float(pad[0]), float(pad[1])))
    return Sample(image, boxes, s.labels, s.image_id, s.path, s.orig_size), meta


class DetectionInputs(Dataset):
    """A dataset of network inputs: ``inputs[i]`` or ``inputs[(i, seed)]`` -> ``(Sample, ImageMeta)``.

    Args:
        dataset: yields :class:`Sample` in original pixels (COCO, YOLO or VOC dataset).
        img_size (int): side ``S`` of the square network input.
        augment (AugmentConfig | None): training augmentation; None for letterbox only.

    With ``plans`` (and augmentation) an item is ``(SamplePlan, ImageMeta)``: the draws and boxes without pixels,
    for :mod:`detector.data.render` (``data.augment_backend: torch``).

    With augmentation the key's ``seed`` seeds a ``numpy.random.Generator`` for that sample (a bare
    index uses the index as seed); :class:`ImageMeta` then has NaN ``scale``/``pad`` (no inverse).

    Any error while building a sample is raised as a :class:`~detector.data.workers.SampleError` naming the
    sample (index, image id, file; the mosaic tile that failed) with the original error chained.
    """

    def __init__(self, dataset: Dataset, img_size: int, augment: AugmentConfig | None = None,
                 plans: bool = False) -> None:
        if img_size <= 0 or img_size % 2:
            raise ValueError(f"img_size must be a positive even number (a multiple of the stride), got {img_size}")
        self.dataset, self.img_size, self.augment = dataset, img_size, augment
        self.plans = plans and augment is not None  # SamplePlan instead of pixels (detector.data.plan)
        self.flips = (make_flip(False), make_flip(True)) if augment is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Sample, ImageMeta]:
        index = key[0] if isinstance(key, tuple) else key
        try:
            return self._build(key)
        except SampleError:
            raise
        except Exception as err:
            if not -len(self) <= index < len(self):  # out of range: the sequence protocol's IndexError, kept
                raise
            raise sample_error(self.dataset, index, err) from err

    def _build(self, key: int | tuple[int, int]) -> tuple[Sample, ImageMeta]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        if self.augment is None:
            return letterboxed_sample(self.dataset, index, self.img_size)
        rng = np.random.default_rng(seed)
        if self.plans:
            plan = plan_sample(self.dataset.records, index, self.img_size, self.augment, rng)
            return plan, ImageMeta(image_id=plan.image_id, orig_size=plan.orig_size, scale=math.nan,
                                   pad=(math.nan, math.nan))
        s = augmented_sample(self.dataset, index, self.img_size, self.augment, rng, self.flips)
        return s, ImageMeta(image_id=s.image_id, orig_size=s.orig_size, scale=math.nan, pad=(math.nan, math.nan))
