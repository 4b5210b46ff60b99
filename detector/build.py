"""Build every part of a run from a validated :class:`~detector.config.Config`.

This is the one place where config names become objects. The tables that map them (``HEADS``, ``MODELS``,
``CODERS``, ``ASSIGNERS``, ``SAMPLERS``, ``REDUCTIONS``), the parts built from one entry each (coder, assigner,
sampler, reduction) and :func:`check_parts` live in :mod:`detector.build_tables` and are re-exported here; this
module builds the model, the criterion, the datasets and loaders, and a whole run (:class:`Parts`).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import nn

from detector.build_tables import (  # noqa: F401 (ASSIGNERS, CODERS, HEADS, HeadKind, REDUCTIONS, SAMPLERS re-exported)
    ASSIGNERS, CODERS, HEADS, MODELS, REDUCTIONS, SAMPLERS, HeadKind, _head_kind, _part, build_assigner, build_coder,
    build_one_to_one_assigner, build_reduction, build_sampler, check_parts, located,
)
from detector.config import Config
from detector.errors import ConfigError
from detector.losses import BOX, CLS, DetectionCriterion, make_loss
from detector.losses.dual import DualAssignmentCriterion
from detector.models.heads.dual import dual_head


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    m = cfg.model
    kind = located(cfg, lambda: _head_kind(cfg))
    make = located(cfg, lambda: _part(m.name, MODELS, "model.name", "model"))
    box_outputs = build_coder(cfg).num_outputs  # 4, or 4 * bins for a distribution (DFL) coder
    head = functools.partial(kind.build, box_outputs=box_outputs, **m.head.params)
    if cfg.one_to_one is not None:  # NMS-free training: a second head of the same kind, one-to-one
        head = dual_head(head, detach=cfg.one_to_one.detach)
    return make(size=m.size, num_classes=num_classes, anchors=m.anchors, strides=tuple(m.strides),
                box_uncertainty=m.box_uncertainty, depth_multiple=m.depth_multiple, width_multiple=m.width_multiple,
                head=head, point_priors=kind.point_priors, upsample=kind.upsample)


def link_class_rows(model: nn.Module, criterion) -> None:
    """Let ``model``'s head leave its class logits uncopied in training when ``criterion`` reads them only at its
    positive pairs (``class_rows_only``; YOLO heads under the YOLOv5, v3 and v2 assigners): the forward copy of
    C of the head's C + 5 channels is skipped, and losses and gradients are unchanged (tests/models/test_split.py)."""
    head = getattr(model, "head", None)
    if hasattr(head, "lazy_class_rows"):
        head.lazy_class_rows = bool(getattr(criterion, "class_rows_only", False))


def build_criterion(cfg: Config, num_classes: int) -> DetectionCriterion | DualAssignmentCriterion:
    """The criterion of ``cfg``; with a ``one_to_one`` section, one per head under its schedule."""
    check_parts(cfg)
    if cfg.one_to_one is None:
        return _detection_criterion(cfg, num_classes, build_assigner(cfg, num_classes))
    return DualAssignmentCriterion(_detection_criterion(cfg, num_classes, build_assigner(cfg, num_classes)),
                                   _detection_criterion(cfg, num_classes, build_one_to_one_assigner(cfg, num_classes)),
                                   schedule=tuple(cfg.one_to_one.many_weight))


def _detection_criterion(cfg: Config, num_classes: int, assigner) -> DetectionCriterion:
    lc = cfg.loss
    return DetectionCriterion(
        assigner=assigner,
        coder=build_coder(cfg),
        box_loss=make_loss(BOX, lc.box, key="loss.box"),  # checked above
        cls_loss=make_loss(CLS, lc.cls, key="loss.cls"),
        obj_loss=make_loss(CLS, lc.obj, key="loss.obj") if lc.obj is not None else None,
        weights=dict(lc.weights),
        num_classes=num_classes,
        image_size=cfg.data.img_size,
        reduction=build_reduction(cfg, num_classes),
        sampler=build_sampler(cfg),
        obj_target=lc.obj_target,
        label_smoothing=lc.label_smoothing,
        box_space=lc.box_space,
        cls_target=lc.cls_target,
        quality_loss=make_loss(CLS, lc.quality, key="loss.quality"),
    )


def build_dataset(cfg: Config, split: str, images: bool = True):
    """The dataset of ``split`` of the dataset YAML named by ``data.dataset`` (first ``data.max_images``), its
    images decoded into memory under ``data.cache_images`` unless ``images`` is False (a caller that reads only
    the annotations, such as the ablation report's ground truth)."""
    from detector.config import resolve_dataset
    from detector.data import build_dataset as build_split

    dataset = build_split(str(resolve_dataset(cfg)), split, max_images=cfg.data.max_images)
    if cfg.data.cache_images and images:
        held = dataset.cache_images()
        print(f"data.cache_images: {len(dataset)} {split} images decoded into memory ({held / 1e9:.2f} GB)")
    return dataset


def build_loader(cfg: Config, dataset, train: bool, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu"):
    """A training loader (augmented, shuffled, batch ``train.batch_size``) or an evaluation loader; under data
    parallelism this rank's slice of each batch (``world_size`` must divide ``train.batch_size``; an evaluation
    batch is rounded up to a multiple of it). With ``data.augment_backend: torch`` a training loader's workers
    plan each sample and its images are drawn on ``device`` (:class:`detector.data.render.RenderLoader`)."""
    from detector.data import AugmentConfig, build_dataloader

    if train and cfg.train.batch_size % world_size:
        raise ConfigError("train.batch_size", f"{cfg.train.batch_size} images cannot be split evenly over "
                                              f"{world_size} processes; use a multiple of {world_size}")
    augment = AugmentConfig(**dataclasses.asdict(cfg.augment)) if train else None
    batch_size = cfg.train.batch_size if train else -(-cfg.eval.batch_size // world_size) * world_size
    plans = train and cfg.data.augment_backend == "torch"
    loader = build_dataloader(
        dataset,
        plans=plans,
        img_size=cfg.data.img_size,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        train=train,
        augment=augment,
        workers=cfg.data.workers,
        worker_timeout=cfg.data.worker_timeout,
        seed=epoch_seed(cfg.train.seed, epoch),
        shuffle=train,
        pin_memory=torch.cuda.is_available(),
    )
    if not plans:
        return loader
    from detector.data.render import RenderLoader, image_bank

    return RenderLoader(loader, image_bank(dataset, device), cfg.data.img_size)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order and augmentation of one epoch: a pure function of (seed, epoch)."""
    return (seed * 1_000_003 + epoch) % 2**63


@dataclass
class Parts:
    """Everything a training run is made of, built from one config."""

    model: nn.Module
    criterion: DetectionCriterion
    coder: object
    train_dataset: object
    val_dataset: object
    train_loader: object
    val_loader: object
    num_classes: int
    cfg: Config
    rank: int = 0
    world_size: int = 1

    mosaic_closed: bool = False
    device: torch.device | str = "cpu"

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the training data for ``epoch`` so its batches depend only on (seed, epoch), which makes
        resumed runs identical to uninterrupted ones; switches mosaic off for the last ``close_mosaic`` epochs;
        sets the criterion's epoch where its weights follow a schedule.

        The loader (and its worker processes) is kept; only its sampler is re-seeded, since the sampler draws
        each epoch's order and per-sample augmentation seeds when the epoch's iterator starts.
        """
        cfg = self.cfg
        close = cfg.train.close_mosaic > 0 and epoch >= cfg.train.epochs - cfg.train.close_mosaic
        if close != self.mosaic_closed:
            mosaic = 0.0 if close else cfg.augment.mosaic
            cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, mosaic=mosaic))
            self.train_loader = build_loader(cfg, self.train_dataset, train=True, rank=self.rank, device=self.device,
                                             world_size=self.world_size)
            self.mosaic_closed = close
        self.train_loader.sampler.reseed(epoch_seed(self.cfg.train.seed, epoch))
        if hasattr(self.criterion, "set_epoch"):  # a loss schedule (NMS-free training's weights)
            self.criterion.set_epoch(epoch, self.cfg.train.epochs)


def build_all(cfg: Config, device: torch.device, rank: int = 0, world_size: int = 1) -> Parts:
    """Datasets, loaders, model (on ``device``), coder and criterion of a training run; the loaders give rank
    ``rank`` of ``world_size`` its slice of every batch (:mod:`detector.engine.distributed`)."""
    train_ds = build_dataset(cfg, "train")
    val_ds = build_dataset(cfg, cfg.eval.split)
    num_classes = len(train_ds.names)
    if list(val_ds.names) != list(train_ds.names):
        raise ConfigError("data.dataset", f"train and {cfg.eval.split} splits have different class names")
    model = build_model(cfg, num_classes).to(device)
    criterion = build_criterion(cfg, num_classes)
    link_class_rows(model, criterion)
    return Parts(
        model=model,
        criterion=criterion,
        coder=build_coder(cfg),
        train_dataset=train_ds,
        val_dataset=val_ds,
        train_loader=build_loader(cfg, train_ds, train=True, rank=rank, world_size=world_size, device=device),
        val_loader=build_loader(cfg, val_ds, train=False, rank=rank, world_size=world_size),
        num_classes=num_classes,
        cfg=cfg,
        rank=rank,
        world_size=world_size,
        device=device,
    )
