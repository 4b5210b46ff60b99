"""What every assigner shares: the call interface, padded per-image ground truth, and turning matches into pairs.

The interface (``docs/design.md``)::

    assigner(priors: Priors, targets: Tensor[n, 6], batch_size: int, pred: Predictions | None = None) -> Assignment

An assigner class sets ``needs_predictions = True`` when it reads ``pred`` (the criterion then decodes every
prior's box and scores, detached; otherwise it passes None and decodes only the positives), ``needs_scores =
False`` when of ``pred`` it reads the boxes alone (the class logits may then stay uncopied:
``DetectionCriterion.class_rows_only``), and ``needs_anchors = True`` when it needs anchor priors
(``priors.anchors`` not None).

Batch vectorisation: the flat ``targets`` rows are scattered into a padded ``(B, G)`` layout (``G`` the most
boxes in one image), so pairwise prior-to-box quantities are ``(B, G, P)`` tensors computed at once for the
batch, with ``valid`` masking the padding. Shape letters as in :mod:`detector.structures`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detector.structures import Assignment


@dataclass
class PaddedTargets:
    """Ground truth of a batch in a padded per-image layout.

    Attributes:
        boxes (Tensor[B, G, 4]): xyxy pixels; padding rows are 0.
        labels (Tensor[B, G]): class index (long); padding rows are 0.
        valid (Tensor[B, G]): bool, True for real boxes.
        row (Tensor[B, G]): row of the flat ``targets`` each entry came from (long); -1 for padding.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor
    row: Tensor

    @property
    def max_boxes(self) -> int:
        return self.boxes.shape[1]


def check_targets(targets: Tensor, batch_size: int, where: str) -> None:
    """Raise ValueError unless ``targets`` is Tensor[n, 6] with image indices in ``[0, batch_size)``."""
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(
            f"{where}: targets must be Tensor[n, 6] = (image_index, class, x1, y1, x2, y2), got shape "
            f"{tuple(targets.shape)}"
        )
    if targets.shape[0]:
        image_index = targets[:, 0].long()
        if bool(((image_index < 0) | (image_index >= batch_size)).any()):
            raise ValueError(
                f"{where}: targets[:, 0] (image_index) must lie in [0, batch_size={batch_size}), got range "
                f"[{int(image_index.min())}, {int(image_index.max())}]"
            )


def pad_targets(targets: Tensor, batch_size: int) -> PaddedTargets:
    """Flat targets (Tensor[n, 6] = image_index, class, x1, y1, x2, y2) -> :class:`PaddedTargets` with ``G`` the
    largest number of boxes in one image (at least 1, so shapes stay non-empty; then every entry is padding).

    Rows keep their order within an image: entry ``(b, j)`` is the ``j``-th row of image ``b`` in ``targets``.

    Example: image indices ``[1, 0, 1]`` with ``B = 2`` give ``G = 2``, ``row = [[1, -1], [0, 2]]``.
    """
    device = targets.device
    image = targets[:, 0].long()  # (n,)
    counts = torch.bincount(image, minlength=batch_size)  # (B,)
    max_boxes = max(int(counts.max()) if targets.shape[0] else 0, 1)
    order = torch.argsort(image, stable=True)  # rows grouped by image, in input order inside an image
    sorted_image = image[order]
    starts = counts.cumsum(0) - counts  # (B,)
    slot = torch.arange(order.numel(), device=device) - starts[sorted_image]  # position inside its image
    row = torch.full((batch_size, max_boxes), -1, dtype=torch.long, device=device)
    row[sorted_image, slot] = order
    valid = row >= 0
    safe = row.clamp(min=0)
    boxes = torch.where(valid[..., None], targets[safe, 2:6] if targets.shape[0] else
                        targets.new_zeros(batch_size, max_boxes, 4), 0.0)  # (B, G, 4)
    labels = torch.where(valid, targets[safe, 1].long() if targets.shape[0] else
                         torch.zeros_like(row), 0)  # (B, G)
    return PaddedTargets(boxes=boxes, labels=labels, valid=valid, row=row)


def assignment_from_matches(matched: Tensor, padded: PaddedTargets, **fields) -> Assignment:
    """One match per prior -> :class:`Assignment` pairs.

    Args:
        matched (Tensor[B, P] long): index ``j`` into the ``G`` boxes of its image for positive priors, and a
            negative value for priors without a ground truth.
        padded: the :class:`PaddedTargets` the indices refer to.
        fields: passed to :class:`Assignment` (``ignore``, ``weight``, ``score``, ...). Per-pair fields must
            follow the pair order, which is row-major over ``(B, P)``.

    Returns:
        Assignment with pairs ordered by image, then prior.
    """
    batch_index, prior_index = (matched >= 0).nonzero(as_tuple=True)  # (M,), (M,)
    gt_index = padded.row[batch_index, matched[batch_index, prior_index]]  # (M,)
    return Assignment(batch_index=batch_index, prior_index=prior_index, gt_index=gt_index, **fields)
