"""Non-finite losses: name the term, keep the batch that caused it, skip the step, stop after too many.

A training step whose loss terms are not all finite is never applied: :meth:`NonFiniteGuard.check` runs after
the backward pass and before the optimizer step; the trainer then drops the gradients accumulated since the last
optimizer step (they hold NaN or inf) and goes on with the next batch. The batch is saved to the run directory as
``bad_batch_e<epoch>_b<batch>.pt`` (1-based epoch, 0-based batch; read it with ``torch.load``):

    "images"     Tensor[B, 3, S, S] float32, the network input
    "targets"    Tensor[n, 6] ``(image_index, class, x1, y1, x2, y2)`` in network-input pixels
    "image_ids"  list[int | str], ``ImageMeta.image_id`` of each image (ids of the dataset's ``coco_gt()``)
    "terms"      dict[str, float], every loss term of the step (``nan`` / ``inf`` included)
    "epoch", "batch"  int

After ``max_bad_steps`` consecutive skipped steps the next bad one raises :class:`NonFiniteLossError`: the run
stops before writing anything else, so ``last.pt`` stays the checkpoint of the last completed epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from detector.engine.checkpoint import save_checkpoint


class NonFiniteLossError(FloatingPointError):
    """A run stopped on non-finite loss terms; the message names the terms, the step and the saved batch."""


def nonfinite_terms(terms: dict[str, float]) -> list[str]:
    """Names of the terms of ``terms`` that are NaN or +-inf, in order (``[]`` when all are finite)."""
    return [k for k, v in terms.items() if not math.isfinite(v)]


@dataclass
class NonFiniteGuard:
    """Counts non-finite steps across epochs and decides when the run stops.

    Attributes:
        max_bad_steps (int): consecutive non-finite steps that are skipped; the next one stops the run
            (0: stop at the first, ``train.max_bad_steps``).
        save_dir (Path | None): where offending batches are saved; None saves nothing.
        consecutive (int): non-finite steps since the last finite one.
        skipped (int): non-finite steps skipped in the whole run.
        amp_skipped (int): optimizer steps the AMP gradient scaler skipped in the whole run (float16 gradients
            overflowed at the current loss scale; the scaler halves it and goes on, as AMP intends). Counted, not
            fatal: a few at the start of training are normal, a steady stream means float16 does not fit the model.
    """

    max_bad_steps: int = 0
    save_dir: Path | None = None
    consecutive: int = 0
    skipped: int = 0
    amp_skipped: int = 0

    def scaled_step(self, scaler, optimizer) -> bool:
        """``scaler.step(optimizer)`` and ``scaler.update()``; False (and counted in ``amp_skipped``) when the scaler
        found inf / NaN gradients and skipped the step, which it shows by lowering its scale."""
        before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        if before is not None and scaler.get_scale() < before:
            self.amp_skipped += 1
            return False
        return True

    def check(self, terms: dict[str, float], batch, epoch: int, index: int) -> bool:
        """True when every value of ``terms`` is finite. Otherwise saves ``batch``, counts the step and returns
        False (skip it), or raises :class:`NonFiniteLossError` once more than ``max_bad_steps`` in a row failed.

        Args:
            terms: loss terms of the step as floats (``loss`` included).
            batch: the collated batch (``images``, ``targets``, ``metas``).
            epoch, index: 0-based epoch and batch index, for the message and the file name.
        """
        bad = nonfinite_terms(terms)
        if not bad:
            self.consecutive = 0
            return True
        self.consecutive += 1
        saved = self._save(terms, batch, epoch, index)
        where = f"epoch {epoch + 1}, batch {index}"
        named = [k for k in bad if k != "loss"] or bad  # the terms that made the total non-finite
        what = ", ".join(f"{k}={terms[k]}" for k in named)
        note = f"; batch saved to {saved}" if saved else ""
        if self.consecutive > self.max_bad_steps:
            raise NonFiniteLossError(
                f"non-finite loss term(s) {what} at {where}{note}. Stopping: {self.consecutive} non-finite step(s) "
                f"in a row, train.max_bad_steps={self.max_bad_steps}; last.pt holds the last completed epoch")
        self.skipped += 1
        print(f"warning: non-finite loss term(s) {what} at {where}: step skipped "
              f"({self.consecutive}/{self.max_bad_steps} in a row){note}", flush=True)
        return False

    def _save(self, terms: dict[str, float], batch, epoch: int, index: int) -> Path | None:
        if self.save_dir is None:
            return None
        metas = getattr(batch, "metas", None) or []
        return save_checkpoint(Path(self.save_dir) / f"bad_batch_e{epoch + 1}_b{index}.pt", {
            "images": batch.images.detach().cpu(),
            "targets": batch.targets.detach().cpu(),
            "image_ids": [m.image_id if isinstance(m.image_id, str) else int(m.image_id) for m in metas],
            "terms": dict(terms),
            "epoch": epoch,
            "batch": index,
        })
