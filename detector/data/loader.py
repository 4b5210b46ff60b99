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
from detector.data.render import collate_plans
from detector.data.transforms import AugmentConfig
from detector.data.workers import DEFAULT_WORKER_TIMEOUT, TimedDataLoader


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for ``n`` items, both drawn from ``generator``.

    Every ``iter()`` (one epoch) advances the generator: the order (a permutation if ``shuffle``,
    else ``0..n-1``) and ``n`` seeds in ``[0, 2**62)``.

    Under data parallelism (``world_size`` > 1) every rank draws the same order and seeds and keeps its slice of
    each global batch of ``batch_size`` items: rank ``r`` takes items ``[r * b, (r + 1) * b)`` of it, with
    ``b = batch_size / world_size`` (a DataLoader of batch ``b`` then gives the rank its slice of batch ``i`` as its
    ``i``-th batch). A last global batch of ``m < batch_size`` items is padded to a multiple of ``world_size`` with
    the epoch's first items and cut evenly, so every rank runs the same number of steps. Example: n = 10,
    batch_size = 4, 2 ranks, order 0..9: rank 0 gets 0 1 | 4 5 | 8, rank 1 gets 2 3 | 6 7 | 9.
    """

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator, batch_size: int = 1, rank: int = 0,
                 world_size: int = 1) -> None:
        if world_size > 1 and batch_size % world_size:
            raise ValueError(f"a global batch of {batch_size} cannot be cut into {world_size} equal slices")
        self.n, self.shuffle, self.generator = n, shuffle, generator
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        full, last = divmod(self.n, self.batch_size)
        return full * self.batch_size // self.world_size + -(-last // self.world_size)

    def reseed(self, seed: int) -> None:
        """Make the next epoch's order and sample seeds a function of ``seed`` alone (see ``Parts.set_epoch``)."""
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator)
        items = list(zip(order.tolist(), seeds.tolist()))
        return iter(items if self.world_size == 1 else self._rank_slice(items))

    def _rank_slice(self, items: list) -> list:
        mine, w = [], self.world_size
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            chunk = chunk + items[:-len(chunk) % w]  # the last chunk padded to a multiple of the ranks
            share = len(chunk) // w
            mine += chunk[self.rank * share:(self.rank + 1) * share]
        return mine


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
                     pin_memory: bool = False, drop_last: bool = False, rank: int = 0,
                     world_size: int = 1, worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
                     plans: bool = False) -> DataLoader:
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
        rank, world_size: under data parallelism, this rank's slice of every batch of ``batch_size`` images
            (which must divide by ``world_size``); the loader's batches then hold ``batch_size / world_size``.
        worker_timeout (float): seconds to wait for a worker's batch before raising WorkerTimeoutError
            (``data.worker_timeout``; 0 waits forever; no effect with ``workers=0``).
        plans (bool): with ``train``, batches of augmentation plans (:func:`~detector.data.render.collate_plans`)
            for :class:`~detector.data.render.RenderLoader` instead of images.

    Returns:
        DataLoader yielding ``Batch(images Tensor[B, 3, S, S] float32 0..1, targets Tensor[n, 6],
        metas list[ImageMeta])``.
    """
    inputs = DetectionInputs(dataset, img_size, augment if train else None, plans=plans and train)
    # The sampler owns its generator: the DataLoader also draws from the generator it is given (worker base
    # seeds, when an iterator is created), and sharing one would make an epoch's order depend on whether the
    # workers were started in an earlier epoch (persistent workers) or for this one (a resumed run).
    sampler = SeededSampler(len(inputs), shuffle, torch.Generator().manual_seed(seed), batch_size, rank, world_size)
    return TimedDataLoader(
        inputs,
        batch_size=batch_size // world_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_plans if inputs.plans else collate,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        timeout=worker_timeout if workers > 0 else 0,
    )
