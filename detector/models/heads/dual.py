"""Two heads on one neck for NMS-free training (YOLOv10, YOLO26): one-to-many and one-to-one.

The one-to-many head learns from a dense assigner (TAL with top-k 10); the one-to-one head, same architecture and
its own weights, from a top-1 assignment, so that at inference each object has one high-scoring prediction and no
NMS is needed. As in YOLOv10, the one-to-one head sees detached features by default: its gradient trains only itself,
the backbone and neck learn from the one-to-many head.

Training mode: :meth:`DualHead.forward` returns :class:`DualLevels`, the one-to-many levels (a list, like any head's)
with the one-to-one levels attached; :meth:`DualHead.flatten` gives the one-to-many HeadOutputs with
``one_to_one`` set. Eval mode: only the one-to-one head runs, and its outputs are the model's (what is exported).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from detector.structures import HeadOutputs, Priors


class DualLevels(list):
    """Per-level outputs of the one-to-many head (Tensor[B, A, H, W, K] each) with ``one_to_one``, the same for the
    one-to-one head. A list, so the detector reads level shapes from it as from any head's output."""

    def __init__(self, many: Sequence[Tensor], one: Sequence[Tensor]):
        super().__init__(many)
        self.one_to_one = list(one)


class DualHead(nn.Module):
    """``one_to_many`` and ``one_to_one``: two heads with the same inputs and outputs (any head of the HEADS table).

    Args:
        one_to_many, one_to_one: the two heads (``forward(features) -> levels``, ``flatten(levels, priors)``).
        detach: the one-to-one head sees detached features (YOLOv10), so its loss does not reach the neck.
    """

    def __init__(self, one_to_many: nn.Module, one_to_one: nn.Module, detach: bool = True):
        super().__init__()
        self.one_to_many, self.one_to_one, self.detach = one_to_many, one_to_one, bool(detach)
        self.num_classes = one_to_many.num_classes
        self.layout = one_to_many.layout

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """features -> DualLevels when training, the one-to-one head's levels in eval mode."""
        one = self.one_to_one([f.detach() for f in features] if self.detach else features)
        if not self.training:
            return one
        return DualLevels(self.one_to_many(features), one)

    def flatten(self, levels: Sequence[Tensor], priors: Priors) -> HeadOutputs:
        if not isinstance(levels, DualLevels):  # eval mode: the one-to-one head alone
            return self.one_to_one.flatten(levels, priors)
        outputs = self.one_to_many.flatten(levels, priors)
        outputs.one_to_one = self.one_to_one.flatten(levels.one_to_one, priors)
        return outputs


def dual_head(make_head: Callable[..., nn.Module], detach: bool = True) -> Callable[..., DualHead]:
    """A head builder (``make_head(in_channels, num_classes, num_anchors, strides, box_uncertainty)``) -> one that
    builds a :class:`DualHead` of two such heads, initialised independently."""
    def build(*args, **kwargs) -> DualHead:
        return DualHead(make_head(*args, **kwargs), make_head(*args, **kwargs), detach=detach)
    return build
