"""The tables that map config names to parts, and the parts each built from one table entry.

Grep a config value (``ciou``, ``rpn``, ``ssd``) and you land on the table that maps it (``detector.losses.BOX``,
``ASSIGNERS`` below), then on the class. Each table is the only list of its names; the config schema and the error
messages read them. An entry's parameters are its constructor's keyword parameters, checked by :func:`check_parts`
(the parts against each other too) when a config loads. :mod:`detector.build` re-exports every public name here
and builds the model, the criterion, the data and a whole run from them.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from detector.assigners.centernet import CenterNetAssigner
from detector.assigners import (
    ATSSAssigner, FCOSAssigner, MaxIoUAssigner, SimOTAAssigner, SSDAssigner, TaskAlignedAssigner, YOLOv1Assigner,
    YOLOv2Assigner, YOLOv3Assigner, YOLOv5Assigner,
)
from detector.config import Config, config_error
from detector.errors import ConfigError
from detector.losses import BOX, CLS, make_loss
from detector.losses.recipes import MeanReduction, YOLOv5Reduction
from detector.losses.spec import parse_loss_spec
from detector.models import build_yolov5
from detector.models.heads.decoupled import DecoupledHead
from detector.models.heads.yolo import YOLOv5Head
from detector.ops.center_coder import CenterNetCoder
from detector.ops.coders import YOLOv3BoxCoder, YOLOv5BoxCoder
from detector.ops.delta_coder import DeltaBoxCoder
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
    choices. Called before anything trains (by :func:`detector.build.build_criterion`, hence by
    ``tools/ablate.py``'s plan).
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
