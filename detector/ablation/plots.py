"""Curves over epochs (mean and min..max band over seeds) and the matplotlib figures drawn from them: mAP per
epoch, loss terms per epoch, and each variant's final mAP with its paired interval against the baseline."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from detector.ablation.results import RunResult
from detector.ablation.spec import Variant
from detector.ablation.stats import PairedComparison


def history_values(history: Sequence[dict], section: str, key: str) -> dict[int, float]:
    """``{epoch: record[section][key]}`` of the epochs where it was recorded (``coco`` is null on epochs
    without evaluation); ``section`` is ``"coco"`` or ``"train"``."""
    out = {}
    for rec in history:
        values = rec.get(section)
        if values and key in values and values[key] is not None:
            out[int(rec["epoch"])] = float(values[key])
    return out


def epoch_curve(per_seed: Sequence[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over seeds at each epoch any seed recorded.

    Args:
        per_seed: one ``{epoch: value}`` per seed (from :func:`history_values`).

    Returns:
        ``(epochs, mean, lo, hi)``, epochs ascending; at each epoch only the seeds that recorded it count.
    """
    epochs = sorted({e for curve in per_seed for e in curve})
    mean, lo, hi = [], [], []
    for e in epochs:
        values = [curve[e] for curve in per_seed if e in curve]
        mean.append(math.fsum(values) / len(values))
        lo.append(min(values))
        hi.append(max(values))
    return epochs, mean, lo, hi


def write_plots(variants: Sequence[Variant], results: Sequence[RunResult], out_dir: str | Path,
                paired: Sequence[PairedComparison] = ()) -> list[Path] | None:
    """``map_curves.png`` (mAP50-95 vs epoch) and ``loss_curves.png`` (one panel per loss term): per variant
    the mean over seeds, with a band from the min to the max seed; with ``paired`` comparisons of ``mAP``,
    ``map_ci.png`` (:func:`draw_paired`).

    Returns the files written (none when no run has finished), or None when matplotlib is not installed.
    """
    if not results:
        return []
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    out_dir = Path(out_dir)
    by_variant = [(i, v, [r for r in results if r.variant == v.name]) for i, v in enumerate(variants)]
    by_variant = [(i, v, rs) for i, v, rs in by_variant if rs]
    terms = list(dict.fromkeys(k for r in results for rec in r.history for k in (rec.get("train") or {})))

    def draw(ax, section: str, key: str) -> None:
        for i, v, rs in by_variant:
            epochs, mean, lo, hi = epoch_curve([history_values(r.history, section, key) for r in rs])
            if not epochs:
                continue
            color = f"C{i % 10}"
            ax.plot(epochs, mean, color=color, marker="o" if len(epochs) < 30 else None, markersize=3,
                    label=f"{v.name} (n={len(rs)})")
            if len(rs) > 1:
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    draw(ax, "coco", "mAP")
    ax.set_ylabel("COCO mAP50-95")
    ax.set_title("mAP50-95 per epoch: mean over seeds, band = min..max")
    if by_variant:
        ax.legend(fontsize="small")
    written = [out_dir / "map_curves.png"]
    fig.savefig(written[0], dpi=120)

    fig = Figure(figsize=(4.5 * max(len(terms), 1), 4), layout="constrained")
    fig.suptitle("training loss terms per epoch: mean over seeds, band = min..max "
                 "(a term's scale depends on its loss function)", fontsize="medium")
    axes = fig.subplots(1, max(len(terms), 1), squeeze=False)[0]
    for ax, term in zip(axes, terms):
        draw(ax, "train", term)
        ax.set_title(term)
    if by_variant and terms:
        axes[0].legend(fontsize="small")
    written.append(out_dir / "loss_curves.png")
    fig.savefig(written[1], dpi=120)
    if any(c.metric == "mAP" for c in paired):
        fig = Figure(figsize=(10, 0.6 * len(variants) + 2.2), layout="constrained")
        draw_paired(fig, variants, results, [c for c in paired if c.metric == "mAP"])
        written.append(out_dir / "map_ci.png")
        fig.savefig(written[-1], dpi=120)
    return written


def draw_paired(fig, variants: Sequence[Variant], results: Sequence[RunResult],
                comparisons: Sequence[PairedComparison]) -> None:
    """Two panels on ``fig``, one row per variant: left, each seed's final mAP50-95 (dots) and their mean (bar);
    right, the mean paired difference to the baseline with its 95% t-interval (no bar with one common seed),
    labelled with the Holm verdict."""
    left, right = fig.subplots(1, 2, sharey=True)
    rows = list(range(len(variants)))[::-1]  # the first variant on top
    by_name = {c.variant: c for c in comparisons}
    baseline = comparisons[0].baseline
    for y, v in zip(rows, variants):
        values = [r.stats["mAP"] for r in results if r.variant == v.name and "mAP" in r.stats]
        if values:
            left.barh(y, math.fsum(values) / len(values), color="C0", alpha=0.3)
            left.plot(values, [y] * len(values), "o", color="C0", markersize=4)
        c = by_name.get(v.name)
        if c is not None and c.mean is not None:
            err = None if c.interval is None else [[c.mean - c.interval[0]], [c.interval[1] - c.mean]]
            color = {"better": "C2", "worse": "C3"}.get(c.verdict, "C7")
            right.errorbar(c.mean, y, xerr=err, fmt="o", color=color, capsize=4)
            right.annotate(c.verdict, (c.mean, y), textcoords="offset points", xytext=(0, 7), ha="center",
                           fontsize="small", color=color)
    left.set_yticks(rows, [v.name + (" (baseline)" if v.name == baseline else "") for v in variants])
    left.set_xlabel("final COCO mAP50-95 (dots: seeds, bar: mean)")
    right.axvline(0.0, color="k", linewidth=0.8)
    right.set_xlabel(f"paired Δ mAP50-95 vs {baseline}: mean, 95% t-interval over seeds")
    for ax in (left, right):
        ax.grid(True, axis="x", alpha=0.3)
