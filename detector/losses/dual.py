"""NMS-free training's criterion: a one-to-many and a one-to-one criterion, weighted by a schedule.

YOLOv10 trains two heads with the same loss under two assignments (TAL top-k 10 and top-1) and sums them. YOLO26
moves the weight over training from the one-to-many head to the one-to-one head, which alone predicts at
inference: the one-to-many weight falls linearly from 0.8 at the first epoch to 0.1 at the last, the one-to-one
weight is one minus it. :func:`many_weight` is that schedule, a pure function of the epoch, so a resumed run
weighs its losses as the uninterrupted one.
"""
from __future__ import annotations

from torch import Tensor

from detector.losses.criterion import DetectionCriterion
from detector.structures import Assignment, HeadOutputs


def many_weight(epoch: int, epochs: int, start: float = 0.8, end: float = 0.1) -> float:
    """Weight of the one-to-many loss at ``epoch`` (0-based) of ``epochs``: linear from ``start`` to ``end``.

    Example (``start`` 0.8, ``end`` 0.1, 8 epochs): epoch 0 -> 0.8, epoch 1 -> 0.7, epoch 7 -> 0.1; one epoch -> 0.8.
    """
    t = min(max(epoch, 0) / max(epochs - 1, 1), 1.0)
    return start + (end - start) * t


class DualAssignmentCriterion:
    """``one_to_many(outputs)`` and ``one_to_one(outputs.one_to_one)``, summed as ``w * many + (1 - w) * one``.

    Args:
        one_to_many, one_to_one: criteria with the same loss terms and different assigners (TAL top-k 10 / top-1).
        schedule: ``(start, end)`` of :func:`many_weight`.

    Returns from a call: each term of both, already weighted (``lbox_o2m``, ``lcls_o2o``, ...), and ``loss``.
    The trainer calls :meth:`set_epoch` before each epoch; assignment statistics are the one-to-many head's.
    """

    def __init__(self, one_to_many: DetectionCriterion, one_to_one: DetectionCriterion,
                 schedule: tuple[float, float] = (0.8, 0.1)):
        if len(schedule) != 2 or not all(0.0 <= w <= 1.0 for w in schedule):
            raise ValueError(f"one_to_one.many_weight must be [start, end] within [0, 1], got {list(schedule)}")
        self.one_to_many, self.one_to_one = one_to_many, one_to_one
        self.schedule = (float(schedule[0]), float(schedule[1]))
        self.weight = self.schedule[0]

    def __repr__(self) -> str:
        return (f"DualAssignmentCriterion(many_weight={list(self.schedule)}, one_to_many={self.one_to_many!r}, "
                f"one_to_one assigner={self.one_to_one.assigner!r})")

    @property
    def assigner(self):
        return self.one_to_many.assigner

    @property
    def last_assignment(self) -> Assignment | None:
        return self.one_to_many.last_assignment

    def train(self, mode: bool = True) -> "DualAssignmentCriterion":
        """Let both criteria's stateful losses (wiou, ghm) update their state, or only use it."""
        self.one_to_many.train(mode)
        self.one_to_one.train(mode)
        return self

    def eval(self) -> "DualAssignmentCriterion":
        return self.train(False)

    def state_dict(self) -> dict[str, dict]:
        """Both criteria's stateful-loss states, under ``one_to_many`` and ``one_to_one``; {} when neither has any."""
        state = {"one_to_many": self.one_to_many.state_dict(), "one_to_one": self.one_to_one.state_dict()}
        return {k: v for k, v in state.items() if v}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.one_to_many.load_state_dict(state.get("one_to_many", {}))
        self.one_to_one.load_state_dict(state.get("one_to_one", {}))

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.weight = many_weight(epoch, epochs, *self.schedule)

    @property
    def count_reducer(self):
        return self.one_to_many.count_reducer

    @count_reducer.setter
    def count_reducer(self, reduce) -> None:
        """Data parallelism: both criteria sum their counts over the ranks (:mod:`detector.engine.distributed`)."""
        self.one_to_many.count_reducer = self.one_to_one.count_reducer = reduce

    def __call__(self, outputs: HeadOutputs, targets: Tensor) -> dict[str, Tensor]:
        if outputs.one_to_one is None:
            raise ValueError("DualAssignmentCriterion needs the one-to-one head's outputs (HeadOutputs.one_to_one): "
                             "the model must be built with the one_to_one config section, in training mode")
        w = self.weight
        many = self.one_to_many(outputs, targets)
        one = self.one_to_one(outputs.one_to_one, targets)
        result = {f"{k}_o2m": w * v for k, v in many.items() if k != "loss"}
        result.update({f"{k}_o2o": (1.0 - w) * v for k, v in one.items() if k != "loss"})
        result["loss"] = w * many["loss"] + (1.0 - w) * one["loss"]
        return result
