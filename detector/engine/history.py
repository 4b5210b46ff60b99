"""What a run writes as it goes: the one line printed per epoch and ``history.jsonl`` (one JSON record per epoch)."""
from __future__ import annotations

import json
from pathlib import Path


def epoch_line(epoch: int, epochs: int, terms: dict[str, float], seconds: float, evaluated: dict | None,
               skipped: int = 0, amp_skipped: int = 0) -> str:
    """The one line printed after each epoch: ``epoch 3/10  lbox 0.0512  lobj 0.0301  12.4 s  mAP50-95 0.1234
    mAP50 0.2345`` (mAP only when evaluated; ``skipped k`` when k non-finite steps were skipped; ``amp-skipped k``
    when AMP's gradient scaler skipped k optimizer steps)."""
    parts = [f"epoch {epoch + 1}/{epochs}"] + [f"{k} {v:.4f}" for k, v in terms.items()] + [f"{seconds:.1f} s"]
    if skipped:
        parts.append(f"skipped {skipped}")
    if amp_skipped:
        parts.append(f"amp-skipped {amp_skipped}")
    if evaluated is not None:
        parts += [f"mAP50-95 {evaluated['mAP']:.4f}", f"mAP50 {evaluated['mAP50']:.4f}"]
    return "  ".join(parts)


def append_history(path: Path, record: dict) -> None:
    """One JSON line per epoch: loss terms, COCO stats when evaluated (else null), learning rates, time."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_history(path: Path, last_epoch: int) -> None:
    """Keep the lines of epochs <= ``last_epoch`` (those the checkpoint being resumed has seen)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= last_epoch]
    path.write_text("".join(ln + "\n" for ln in lines))


def read_history(path: str | Path) -> list[dict]:
    """The records ``append_history`` wrote, in epoch order."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
