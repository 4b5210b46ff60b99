"""The root schema :class:`Config` (one field per section) and the annotated type of a key path in it."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from detector.config.data import AugmentConfig, DataConfig
from detector.config.fields import PartSpec
from detector.config.keys import KeyPath
from detector.config.model import LossConfig, ModelConfig, OneToOneConfig
from detector.config.train import EvalConfig, TrainConfig


@dataclass
class Config:
    """A whole experiment. Build it with :func:`load_config` or :func:`config_from_dict`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation."""
    assigner: PartSpec = field(default_factory=lambda: PartSpec("yolov5", {"anchor_t": 4.0, "neighbour_offset": 0.5}))
    """Label assignment; a name of ``detector.build.ASSIGNERS`` with its parameters
    (``{name: yolov5, anchor_t: 4.0}``)."""
    sampler: PartSpec | None = None
    """Optional sampler after assignment (``detector.build.SAMPLERS``: ``random`` for RPN, ``hard_negative``
    for SSD)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss terms and weights."""
    one_to_one: OneToOneConfig | None = None
    """NMS-free training: a one-to-one head beside the main head; null = one head. At inference the one-to-one
    head predicts (set ``eval.nms: none``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and run bookkeeping."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Post-processing and evaluation."""


def _schema_type(path: KeyPath) -> Any:
    """The annotated type of the field at ``path`` in :class:`Config`, or None if there is none."""
    tp: Any = Config
    for part in path:
        tp = _strip_optional(tp)
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or tp is PartSpec:
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp
