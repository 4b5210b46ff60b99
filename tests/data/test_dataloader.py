"""build_dataloader: validation geometry round trip, and seeded reproducibility with and without workers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detector.data import AugmentConfig, SeededSampler, build_dataloader, letterbox_geometry, scale_boxes_to_original

AUG = AugmentConfig(degrees=5, shear=2, flipud=0.5)


def _first_batches(ds, workers: int, seed: int, epochs: int = 1, shuffle: bool = True):
    loader = build_dataloader(ds, img_size=128, batch_size=4, train=True, augment=AUG, workers=workers,
                              seed=seed, shuffle=shuffle)
    return [next(iter(loader)) for _ in range(epochs)]


def _same(a, b) -> bool:
    return (torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
            and [m.image_id for m in a.metas] == [m.image_id for m in b.metas])


@pytest.fixture(scope="module")
def small(request):
    return request.getfixturevalue("coco128").subset(8)


def test_validation_batch_maps_back_to_original_boxes(small):
    """train=False: letterboxed images, metas with the letterbox scale/pad; scaling each image's target
    boxes back with scale_boxes_to_original gives the dataset's original boxes."""
    loader = build_dataloader(small, img_size=160, batch_size=4, train=False, augment=AUG, workers=0, seed=0,
                              shuffle=False)
    images, targets, metas = next(iter(loader))
    assert images.shape == (4, 3, 160, 160) and len(metas) == 4
    for i, meta in enumerate(metas):
        sample = small[i]
        scale, _, (left, top, _, _) = letterbox_geometry(sample.orig_size, 160)
        assert meta.image_id == sample.image_id and meta.orig_size == sample.orig_size
        assert meta.scale == scale and meta.pad == (left, top)
        rows = targets[targets[:, 0] == i]
        back = scale_boxes_to_original(rows[:, 2:], meta)
        np.testing.assert_allclose(back.numpy(), sample.boxes, atol=1e-3)
        assert rows[:, 1].long().tolist() == sample.labels.tolist()


def test_training_batches_are_augmented_and_have_nan_meta(small):
    batch = _first_batches(small, workers=0, seed=0)[0]
    assert batch.images.shape == (4, 3, 128, 128)
    assert all(math.isnan(m.scale) for m in batch.metas)
    boxes = batch.targets[:, 2:]
    assert ((boxes >= 0) & (boxes <= 128)).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_same_seed_same_batches_without_workers(small):
    """Two constructions with seed 0 give identical first batches (and second epochs); global NumPy and
    torch state drawn in between does not matter; another seed differs; epoch 2 differs from epoch 1."""
    a = _first_batches(small, workers=0, seed=0, epochs=2)
    np.random.seed(123), np.random.random(10), torch.rand(3)
    b = _first_batches(small, workers=0, seed=0, epochs=2)
    c = _first_batches(small, workers=0, seed=1)
    assert _same(a[0], b[0]) and _same(a[1], b[1])
    assert not _same(a[0], c[0])
    assert not _same(a[0], a[1])


def test_same_seed_same_batches_with_workers_and_independent_of_worker_count(small):
    """workers=2, constructed twice: identical first batches; and identical to workers=0 since each sample
    depends only on the (index, seed) pair drawn by the sampler."""
    a = _first_batches(small, workers=2, seed=3)
    b = _first_batches(small, workers=2, seed=3)
    z = _first_batches(small, workers=0, seed=3)
    assert _same(a[0], b[0]) and _same(a[0], z[0])


def test_seeded_sampler_orders_and_seeds():
    """Shuffled: a permutation of 0..n-1 that changes per epoch and repeats for the same generator seed.
    Unshuffled: 0..n-1 in order, fresh sample seeds each epoch."""
    s = SeededSampler(10, True, torch.Generator().manual_seed(0))
    e1, e2 = list(s), list(s)
    assert sorted(i for i, _ in e1) == list(range(10)) and e1 != e2
    assert list(SeededSampler(10, True, torch.Generator().manual_seed(0))) == e1
    u = SeededSampler(4, False, torch.Generator().manual_seed(0))
    f1, f2 = list(u), list(u)
    assert [i for i, _ in f1] == [0, 1, 2, 3] and [s for _, s in f1] != [s for _, s in f2]


def test_cached_images_give_the_same_batches(coco128):
    """data.cache_images: a dataset whose images were decoded once into memory gives the same training and
    validation batches, byte for byte, as one that reads every file (workers forked after the cache share it);
    the cache holds H x W x 3 bytes per image and is read-only, so a transform writing into it would fail."""
    import copy

    disk = coco128.subset(8)
    cached = copy.copy(disk)
    held = cached.cache_images()
    assert held == sum(r.height * r.width * 3 for r in disk.records)
    assert cached[3].image.flags.writeable is False and np.array_equal(cached[3].image, disk[3].image)
    for train, workers, mosaic in ((True, 2, 1.0), (True, 0, 0.0), (False, 0, 0.0)):
        augment = AugmentConfig(mosaic=mosaic, flipud=0.5)
        a, b = (next(iter(build_dataloader(ds, img_size=128, batch_size=8, train=train, augment=augment,
                                           workers=workers, seed=3, shuffle=train))) for ds in (disk, cached))
        assert _same(a, b), (train, workers, mosaic)
    assert disk._images is None and cached.subset(2)._images is not None
