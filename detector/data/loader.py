"""DataLoader construction with reproducible, worker-count-independent randomness.

The sampler draws, from a ``torch.Generator`` seeded with ``seed``, each epoch's order and one
seed per sample; the sample's augmentation uses only that seed (see :mod:`detector.data.pipeline`).
So two loaders built with the same arguments give identical batches, epoch after epoch, with
``workers=0`` or ``workers>0``, and each new epoch (a new ``iter(loader)``) differs.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detector.data.collate import collate
from detector.data.pipeline import DetectionInputs
from detector.data.transforms import AugmentConfig


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for ``n`` items, both drawn from ``generator``.

    Every ``iter()`` (one epoch) advances the generator: the order (a permutation if ``shuffle``,
    else ``0..n-1``) and ``n`` seeds in ``[0, 2**62)``.
    """

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator) -> None:
        self.n, self.shuffle, self.generator = n, shuffle, generator

    def __len__(self) -> int:
        return self.n

    def reseed(self, seed: int) -> None:
        """Make the next epoch's order and sample seeds a function of ``seed`` alone (see ``Parts.set_epoch``)."""
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator)
        return iter(list(zip(order.tolist(), seeds.tolist())))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and NumPy's global state from torch's per-worker seed.

    torch gives each worker ``base_seed + worker_id`` (the base drawn from the loader's
    generator); our transforms use only per-sample generators, so this only guards third-party
    code that reads global state. Also keeps OpenCV single-threaded inside workers.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)


def build_dataloader(dataset: Dataset, img_size: int, batch_size: int, train: bool,
                     augment: AugmentConfig | None, workers: int, seed: int, shuffle: bool,
                     pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader of :class:`~detector.data.collate.Batch` over ``dataset``.

    Args:
        dataset: yields :class:`~detector.data.base.Sample` in original pixels.
        img_size (int): side ``S`` of the square network input (even; a multiple of the stride).
        batch_size (int): images per batch.
        train (bool): apply ``augment`` (mosaic, affine, HSV, flips); False: letterbox only and
            ``augment`` is ignored (validation).
        augment (AugmentConfig | None): None trains on letterboxed images without augmentation.
        workers (int): DataLoader worker processes (0: load in the main process).
        seed (int): seeds the generator behind the order and every sample's augmentation.
        shuffle (bool): a new random order each epoch.

    Returns:
        DataLoader yielding ``Batch(images Tensor[B, 3, S, S] float32 0..1, targets Tensor[n, 6],
        metas list[ImageMeta])``.
    """
    inputs = DetectionInputs(dataset, img_size, augment if train else None)
    # The sampler owns its generator: the DataLoader also draws from the generator it is given (worker base
    # seeds, when an iterator is created), and sharing one would make an epoch's order depend on whether the
    # workers were started in an earlier epoch (persistent workers) or for this one (a resumed run).
    sampler = SeededSampler(len(inputs), shuffle, torch.Generator().manual_seed(seed))
    return DataLoader(
        inputs,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )
