"""Build every part of a run from a validated :class:`~detector.config.Config`.

This is the one place where config names become objects: grep a config value (``ciou``, ``yolov5``) and
you land on the table that maps it (``detector.losses.BOX``, ``ASSIGNERS`` below), then on the function.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from detector.assigners import YOLOv5Assigner
from detector.config import Config, config_error
from detector.errors import ConfigError
from detector.losses import BOX, CLS, DetectionCriterion, make_loss
from detector.models import build_yolov5
from detector.ops.coders import YOLOv5BoxCoder

# config name -> callable(cfg.assigner) -> assigner
ASSIGNERS: dict[str, Callable] = {
    "yolov5": lambda a: YOLOv5Assigner(anchor_t=a.anchor_t),
}

CODERS: dict[str, Callable] = {
    "yolov5": YOLOv5BoxCoder,
}


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    m = cfg.model
    return build_yolov5(
        size=m.size,
        num_classes=num_classes,
        anchors=m.anchors,
        strides=tuple(m.strides),
        box_uncertainty=m.box_uncertainty,
        depth_multiple=m.depth_multiple,
        width_multiple=m.width_multiple,
    )


def build_coder(cfg: Config):
    return CODERS[cfg.model.name]()


def build_assigner(cfg: Config):
    name = cfg.assigner.name
    if name not in ASSIGNERS:
        raise ConfigError("assigner.name", f"unknown assigner {name!r}; known: {', '.join(sorted(ASSIGNERS))}")
    return ASSIGNERS[name](cfg.assigner)


def build_criterion(cfg: Config, num_classes: int) -> DetectionCriterion:
    lc = cfg.loss
    box_loss = make_loss(BOX, lc.box, key="loss.box")
    if "pred_log_var" in inspect.signature(box_loss.fn).parameters and not cfg.model.box_uncertainty:
        raise config_error(cfg, "loss.box", f"{lc.box.name!r} needs the head's predicted variances: "
                           "set model.box_uncertainty: true")
    return DetectionCriterion(
        assigner=build_assigner(cfg),
        coder=build_coder(cfg),
        box_loss=box_loss,
        cls_loss=make_loss(CLS, lc.cls, key="loss.cls"),
        obj_loss=make_loss(CLS, lc.obj, key="loss.obj") if lc.obj is not None else None,
        weights=dict(lc.weights),
        obj_target=lc.obj_target,
        level_balance=tuple(lc.level_balance),
        scale_gains=lc.scale_gains,
        label_smoothing=lc.label_smoothing,
        num_classes=num_classes,
        image_size=cfg.data.img_size,
    )


def build_dataset(cfg: Config, split: str):
    """The dataset of ``split`` of the dataset YAML named by ``data.dataset`` (first ``data.max_images``)."""
    from detector.config import resolve_dataset
    from detector.data import build_dataset as build_split

    return build_split(str(resolve_dataset(cfg)), split, max_images=cfg.data.max_images)


def build_loader(cfg: Config, dataset, train: bool, epoch: int = 0):
    """A training loader (augmented, shuffled, batch ``train.batch_size``) or an evaluation loader."""
    from detector.data import AugmentConfig, build_dataloader

    augment = AugmentConfig(**dataclasses.asdict(cfg.augment)) if train else None
    return build_dataloader(
        dataset,
        img_size=cfg.data.img_size,
        batch_size=cfg.train.batch_size if train else cfg.eval.batch_size,
        train=train,
        augment=augment,
        workers=cfg.data.workers,
        seed=epoch_seed(cfg.train.seed, epoch),
        shuffle=train,
        pin_memory=torch.cuda.is_available(),
    )


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

    mosaic_closed: bool = False

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the training data for ``epoch`` so its batches depend only on (seed, epoch), which makes
        resumed runs identical to uninterrupted ones; switches mosaic off for the last ``close_mosaic`` epochs.

        The loader (and its worker processes) is kept; only its sampler is re-seeded, since the sampler draws
        each epoch's order and per-sample augmentation seeds when the epoch's iterator starts.
        """
        cfg = self.cfg
        close = cfg.train.close_mosaic > 0 and epoch >= cfg.train.epochs - cfg.train.close_mosaic
        if close != self.mosaic_closed:
            mosaic = 0.0 if close else cfg.augment.mosaic
            cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, mosaic=mosaic))
            self.train_loader = build_loader(cfg, self.train_dataset, train=True)
            self.mosaic_closed = close
        self.train_loader.sampler.reseed(epoch_seed(self.cfg.train.seed, epoch))


def build_all(cfg: Config, device: torch.device) -> Parts:
    """Datasets, loaders, model (on ``device``), coder and criterion of a training run."""
    train_ds = build_dataset(cfg, "train")
    val_ds = build_dataset(cfg, cfg.eval.split)
    num_classes = len(train_ds.names)
    if list(val_ds.names) != list(train_ds.names):
        raise ConfigError("data.dataset", f"train and {cfg.eval.split} splits have different class names")
    model = build_model(cfg, num_classes).to(device)
    return Parts(
        model=model,
        criterion=build_criterion(cfg, num_classes),
        coder=build_coder(cfg),
        train_dataset=train_ds,
        val_dataset=val_ds,
        train_loader=build_loader(cfg, train_ds, train=True),
        val_loader=build_loader(cfg, val_ds, train=False),
        num_classes=num_classes,
        cfg=cfg,
    )
