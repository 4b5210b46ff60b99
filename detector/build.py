"""Build every part of a run from a validated :class:`~detector.config.Config`.

This is the one place where config names become objects: grep a config value (``ciou``, ``rpn``, ``ssd``) and
you land on the table that maps it (``detector.losses.BOX``, ``ASSIGNERS`` below), then on the class. Each
table is the only list of its names; the config schema and the error messages read them. An entry's
parameters are its constructor's keyword parameters, checked by :func:`check_parts` when a config loads.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from detector.assigners.centernet import CenterNetAssigner
from detector.assigners import (
    ATSSAssigner, FCOSAssigner, MaxIoUAssigner, SimOTAAssigner, SSDAssigner, TaskAlignedAssigner, YOLOv1Assigner,
    YOLOv2Assigner, YOLOv3Assigner, YOLOv5Assigner,
)
from detector.config import Config, config_error
from detector.errors import ConfigError
from detector.losses import BOX, CLS, DetectionCriterion, make_loss
from detector.losses.dual import DualAssignmentCriterion
from detector.losses.recipes import MeanReduction, YOLOv5Reduction
from detector.losses.spec import parse_loss_spec
from detector.models import build_yolov5
from detector.models.heads.decoupled import DecoupledHead
from detector.models.heads.dual import dual_head
from detector.models.heads.yolo import YOLOv5Head
from detector.ops.center_coder import CenterNetCoder
from detector.ops.coders import DeltaBoxCoder, YOLOv3BoxCoder, YOLOv5BoxCoder
from detector.ops.point_coders import DistributionCoder, LTRBCoder
from detector.samplers import HardNegativeSampler, RandomSampler


@dataclass(frozen=True)
class HeadKind:
    """A head of the ``HEADS`` table: how to build it and what it emits.

    ``build(in_channels, num_classes, num_anchors, strides, box_uncertainty, **params) -> nn.Module``.
    """

    build: Callable[..., nn.Module]
    objectness: bool
    background: bool = False
    point_priors: bool = False
    upsample: int = 1  # the head's map is this much finer than the neck level it reads


# model.head.name -> head
HEADS: dict[str, HeadKind] = {
    "yolo": HeadKind(functools.partial(YOLOv5Head, objectness=True), objectness=True),
    "retina": HeadKind(functools.partial(YOLOv5Head, objectness=False), objectness=False),
    "ssd": HeadKind(functools.partial(YOLOv5Head, objectness=False, background=True), objectness=False,
                    background=True),
    "fcos": HeadKind(functools.partial(YOLOv5Head, objectness=False, quality=True), objectness=False,
                     point_priors=True),
    # one point per cell: sigmoid classes (YOLOv8 with a dfl coder, ATSS / TAL on points), and with objectness (YOLOX)
    "points": HeadKind(functools.partial(YOLOv5Head, objectness=False), objectness=False, point_priors=True),
    "points_obj": HeadKind(functools.partial(YOLOv5Head, objectness=True), objectness=True, point_priors=True),
    # separate box and class towers of 3x3 convolutions per level (YOLOv8; with objectness YOLOX)
    "decoupled": HeadKind(functools.partial(DecoupledHead, objectness=False), objectness=False, point_priors=True),
    "decoupled_obj": HeadKind(functools.partial(DecoupledHead, objectness=True), objectness=True, point_priors=True),
    # CenterNet: the stride-8 level upsampled to a stride-4 map, a heat-map tower (initial probability 0.1) and a
    # tower for (offset, size), one 3x3 convolution each; model.strides: [4]
    "centernet": HeadKind(functools.partial(DecoupledHead, objectness=False, upsample=2, cls_prior=0.1, depth=1,
                                            box_width=64, cls_width=64), objectness=False, point_priors=True,
                          upsample=2),
}

# model.name -> backbone + neck builder
MODELS: dict[str, Callable[..., nn.Module]] = {
    "yolov5": build_yolov5,
}

# model.coder.name -> coder class
CODERS: dict[str, Callable] = {
    "yolov5": YOLOv5BoxCoder,
    "yolov3": YOLOv3BoxCoder,
    "delta": DeltaBoxCoder,
    "ltrb": LTRBCoder,
    "dfl": DistributionCoder,
    "centernet": CenterNetCoder,
}

# assigner.name -> assigner class (a partial is a preset whose bound values a config may still override)
ASSIGNERS: dict[str, Callable] = {
    "yolov5": YOLOv5Assigner,
    "yolov3": YOLOv3Assigner,
    "yolov2": YOLOv2Assigner,
    "yolov1": YOLOv1Assigner,
    "rpn": functools.partial(MaxIoUAssigner, pos_iou=0.7, neg_iou=0.3, allow_low_quality_matches=True),
    "retinanet": functools.partial(MaxIoUAssigner, pos_iou=0.5, neg_iou=0.4, allow_low_quality_matches=True),
    "max_iou": MaxIoUAssigner,
    "ssd": SSDAssigner,
    "fcos": FCOSAssigner,
    "tal": TaskAlignedAssigner,
    "simota": SimOTAAssigner,
    "atss": ATSSAssigner,
    "centernet": CenterNetAssigner,
}

# sampler.name -> sampler class
SAMPLERS: dict[str, Callable] = {
    "random": RandomSampler,
    "hard_negative": HardNegativeSampler,
}

# loss.reduction.name -> recipe class
REDUCTIONS: dict[str, Callable] = {
    "yolov5": YOLOv5Reduction,
    "mean": MeanReduction,
}

_SUPPLIED = {  # constructor parameters the framework passes itself, per table
    "head": frozenset({"in_channels", "num_classes", "num_anchors", "strides", "box_uncertainty", "objectness",
                       "background", "quality", "box_outputs"}),
    "reduction": frozenset({"num_classes", "image_size"}),
    "assigner": frozenset({"num_classes"}),
}


def _part(spec, table: dict, key: str, kind: str):
    """Parse a config part against its table (unknown names / parameters -> ConfigError naming ``key``)."""
    return parse_loss_spec(spec, table, key, inputs=0, supplied=_SUPPLIED.get(kind, frozenset()), kind=kind)


def _make(spec, table: dict, key: str, kind: str, **supplied):
    """Parse and construct a part; a constructor's ValueError (a bad parameter value) becomes a ConfigError."""
    part = _part(spec, table, key, kind)
    try:
        return part(**supplied)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(key, str(err)) from None


def located(cfg: Config, build: Callable[[], object]):
    """``build()``, with a ConfigError that names only its key re-raised at the file and line ``cfg`` set it."""
    try:
        return build()
    except ConfigError as err:
        if err.file is None and err.key:
            raise config_error(cfg, err.key, err.detail) from None
        raise


def _head_kind(cfg: Config) -> HeadKind:
    _part(cfg.model.head, {k: v.build for k, v in HEADS.items()}, "model.head", "head")
    return HEADS[cfg.model.head.name]


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


def build_coder(cfg: Config):
    return located(cfg, lambda: _make(cfg.model.coder, CODERS, "model.coder", "coder"))


def _assigner(spec, key: str, num_classes: int):
    """An assigner that renders per-class targets (CenterNet's heat map) is given the number of classes."""
    entry = ASSIGNERS.get(spec.name)
    takes_classes = entry is not None and "num_classes" in inspect.signature(entry).parameters
    return _make(spec, ASSIGNERS, key, "assigner", **({"num_classes": num_classes} if takes_classes else {}))


def build_assigner(cfg: Config, num_classes: int = 1):
    return located(cfg, lambda: _assigner(cfg.assigner, "assigner", num_classes))


def build_one_to_one_assigner(cfg: Config, num_classes: int = 1):
    return located(cfg, lambda: _assigner(cfg.one_to_one.assigner, "one_to_one.assigner", num_classes))


def build_sampler(cfg: Config):
    return None if cfg.sampler is None else located(cfg, lambda: _make(cfg.sampler, SAMPLERS, "sampler", "sampler"))


def build_reduction(cfg: Config, num_classes: int):
    supplied = {"num_classes": num_classes, "image_size": cfg.data.img_size} if cfg.loss.reduction.name == "yolov5" \
        else {}
    return located(cfg, lambda: _make(cfg.loss.reduction, REDUCTIONS, "loss.reduction", "reduction", **supplied))


def _class_attr(entry: Callable, name: str) -> bool:
    """A class attribute of a table entry (a class or a partial of one)."""
    return bool(getattr(getattr(entry, "func", entry), name, False))


def check_parts(cfg: Config) -> None:
    """Every part's name and parameters against its table, and the parts against each other.

    Raises ConfigError at the file and line of the key and, for a combination that cannot work, the valid
    choices. Called before anything trains (by :func:`build_criterion`, hence by ``tools/ablate.py``'s plan).
    """
    located(cfg, lambda: _check_parts(cfg))


def _check_parts(cfg: Config) -> None:
    kind = _head_kind(cfg)
    coder, assigner = build_coder(cfg), build_assigner(cfg)
    build_sampler(cfg)
    build_reduction(cfg, num_classes=1)
    if cfg.one_to_one is not None:
        build_one_to_one_assigner(cfg)
    lc = cfg.loss
    for key, spec, table in (("loss.box", lc.box, BOX), ("loss.cls", lc.cls, CLS), ("loss.quality", lc.quality, CLS)):
        make_loss(table, spec, key=key)
    if lc.obj is not None:
        make_loss(CLS, lc.obj, key="loss.obj")
    name, points = cfg.model.head.name, kind.point_priors
    if not points and cfg.model.anchors is None:
        raise ConfigError("model.anchors", f"head {name!r} places anchors: give model.anchors")
    if points and getattr(assigner, "needs_anchors", False):
        valid = sorted(n for n, a in ASSIGNERS.items() if not _class_attr(a, "needs_anchors"))
        raise ConfigError("assigner.name", f"{cfg.assigner.name!r} needs anchor priors but head {name!r} uses "
                                           f"points; valid with points: {', '.join(valid)}")
    if points and getattr(coder, "needs_anchors", False):
        valid = sorted(n for n, c in CODERS.items() if not _class_attr(c, "needs_anchors"))
        raise ConfigError("model.coder", f"{cfg.model.coder.name!r} needs anchor priors but head {name!r} uses "
                                         f"points; valid with points: {', '.join(valid)}")
    if kind.objectness and lc.obj is None:
        raise ConfigError("loss.obj", f"head {name!r} predicts objectness: give it a loss (bce), or use a head "
                                      f"without it ({', '.join(n for n, h in HEADS.items() if not h.objectness)})")
    if not kind.objectness and lc.obj is not None:
        raise ConfigError("loss.obj", f"head {name!r} has no objectness: set loss.obj: null (heads with "
                                      f"objectness: {', '.join(n for n, h in HEADS.items() if h.objectness)})")
    if kind.background and lc.cls.name != "ce":
        raise ConfigError("loss.cls", f"head {name!r} scores a softmax over a background class: use ce, "
                                      f"got {lc.cls.name!r}")
    if cfg.eval.nms == "peaks" and (not points or len(cfg.model.strides) != 1):
        raise ConfigError("eval.nms", f"peaks reads one map of point priors; head {name!r} has "
                                      f"{len(cfg.model.strides)} level(s) of {'points' if points else 'anchors'} "
                                      f"(use iou, diou or none)")
    if cfg.sampler is not None and cfg.sampler.name == "hard_negative" and kind.objectness:
        raise ConfigError("sampler", f"hard_negative ranks the background loss of a head without objectness; "
                                     f"head {name!r} has objectness (use retina or ssd)")
    if not cfg.model.box_uncertainty and make_loss(BOX, lc.box, key="loss.box").accepts("pred_log_var"):
        raise ConfigError("loss.box", f"{lc.box.name!r} needs the head's predicted variances: "
                                      "set model.box_uncertainty: true")


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


def build_dataset(cfg: Config, split: str):
    """The dataset of ``split`` of the dataset YAML named by ``data.dataset`` (first ``data.max_images``)."""
    from detector.config import resolve_dataset
    from detector.data import build_dataset as build_split

    return build_split(str(resolve_dataset(cfg)), split, max_images=cfg.data.max_images)


def build_loader(cfg: Config, dataset, train: bool, epoch: int = 0, rank: int = 0, world_size: int = 1):
    """A training loader (augmented, shuffled, batch ``train.batch_size``) or an evaluation loader; under data
    parallelism this rank's slice of each batch (``world_size`` must divide ``train.batch_size``; an evaluation
    batch is rounded up to a multiple of it)."""
    from detector.data import AugmentConfig, build_dataloader

    if train and cfg.train.batch_size % world_size:
        raise ConfigError("train.batch_size", f"{cfg.train.batch_size} images cannot be split evenly over "
                                              f"{world_size} processes; use a multiple of {world_size}")
    augment = AugmentConfig(**dataclasses.asdict(cfg.augment)) if train else None
    batch_size = cfg.train.batch_size if train else -(-cfg.eval.batch_size // world_size) * world_size
    return build_dataloader(
        dataset,
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
            self.train_loader = build_loader(cfg, self.train_dataset, train=True, rank=self.rank,
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
    return Parts(
        model=model,
        criterion=build_criterion(cfg, num_classes),
        coder=build_coder(cfg),
        train_dataset=train_ds,
        val_dataset=val_ds,
        train_loader=build_loader(cfg, train_ds, train=True, rank=rank, world_size=world_size),
        val_loader=build_loader(cfg, val_ds, train=False, rank=rank, world_size=world_size),
        num_classes=num_classes,
        cfg=cfg,
        rank=rank,
        world_size=world_size,
    )
