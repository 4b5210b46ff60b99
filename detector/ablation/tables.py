"""The tables of an ablation report: the summary (mean ± std per variant), the paired comparisons with the
baseline, the assignment statistics, as markdown and as CSV (full precision, empty cells where a value is missing)."""
from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from detector.ablation.results import (
    ASSIGN_STATS,
    DELTA_METRICS,
    SUMMARY_METRICS,
    AssignmentRow,
    RunResult,
    VariantRow,
)
from detector.ablation.errors import ERROR_TYPES, ErrorBreakdown
from detector.ablation.stats import PairedComparison


def format_mean_std(value: tuple[float, float | None] | None, digits: int = 4) -> str:
    """``(0.32, 0.0283)`` -> ``"0.3200 ± 0.0283"``; ``(0.32, None)`` -> ``"0.3200"``; None -> ``"–"``."""
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_duration(seconds: float | None) -> str:
    """``4.25`` -> ``"4.2 s"``, ``42.0`` -> ``"42 s"``, ``150`` -> ``"2.5 min"``, ``5400`` -> ``"1.50 h"``,
    None -> ``"–"``."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def loss_terms(rows: Sequence[VariantRow]) -> list[str]:
    """Every loss term of any row, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r.losses))


def format_markdown_table(rows: Sequence[VariantRow], baseline: str | None = None) -> str:
    """The summary as a markdown table: variant, overrides, mAP50-95 / mAP50 (mean ± std) with their delta
    to the baseline row (bold; default the first), mAP75, the last-epoch loss terms, training time per run,
    finished/planned seeds."""
    terms = loss_terms(rows)
    ref = baseline if baseline is not None else (rows[0].name if rows else "")
    head = ["variant", "overrides"]
    for key, title in SUMMARY_METRICS:
        head.append(title)
        if key in DELTA_METRICS:
            head.append(f"Δ {title}")
    head += terms + ["train time / run", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        cells = [f"**{r.name}**" if r.name == ref else r.name,
                 " ".join(f"`{_md_cell(o)}`" for o in r.overrides) or "(base)"]
        for key, _ in SUMMARY_METRICS:
            cells.append(format_mean_std(r.metrics.get(key)))
            if key in DELTA_METRICS:
                d = r.deltas.get(key)
                cells.append(f"ref ({ref})" if r.name == ref else ("–" if d is None else f"{d:+.4f}"))
        cells += [f"{r.losses[t]:.4f}" if t in r.losses else "–" for t in terms]
        cells.append(format_duration(r.train_time_s))
        n = len(r.seeds)
        cells.append(str(n) if n == r.planned else f"{n}/{r.planned}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_summary_csv(rows: Sequence[VariantRow]) -> str:
    """One CSV line per variant at full precision; empty cells where a value is missing."""
    terms = loss_terms(rows)
    head = ["variant", "overrides", "seeds_done", "seeds_planned"]
    for key, _ in SUMMARY_METRICS:
        head += [f"{key}_mean", f"{key}_std"]
    head += [f"delta_{k}" for k in DELTA_METRICS] + terms + ["train_time_s"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        line: list[Any] = [r.name, " ".join(r.overrides), len(r.seeds), r.planned]
        for key, _ in SUMMARY_METRICS:
            mean, std = r.metrics.get(key, (None, None))
            line += [_csv(mean), _csv(std)]
        line += [_csv(r.deltas.get(k)) for k in DELTA_METRICS]
        line += [_csv(r.losses.get(t)) for t in terms]
        line.append(_csv(r.train_time_s))
        w.writerow(line)
    return buf.getvalue()


def format_runs_csv(results: Sequence[RunResult]) -> str:
    """One CSV line per finished run: variant, seed, every COCO stat, every loss term, training time."""
    stats = list(dict.fromkeys(k for r in results for k in r.stats))
    terms = list(dict.fromkeys(k for r in results for k in r.losses))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", *stats, *terms, "train_time_s"])
    for r in results:
        w.writerow([r.variant, r.seed, *[_csv(r.stats.get(k)) for k in stats],
                    *[_csv(r.losses.get(k)) for k in terms], _csv(r.train_time_s)])
    return buf.getvalue()


def _csv(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _fmt(value: float | None, spec: str = "+.4f") -> str:
    return "–" if value is None else format(value, spec)


def format_p(p: float | None) -> str:
    """``0.0396`` -> ``"0.040"``, ``0.0004`` -> ``"<0.001"``, None -> ``"–"``."""
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_paired_table(comparisons: Sequence[PairedComparison]) -> str:
    """Markdown: one line per (variant, metric): common seeds, the per-seed differences, their mean, 95%
    t-interval, raw and Holm-adjusted p-values, the verdict."""
    titles = dict(SUMMARY_METRICS)
    lines = ["| variant | metric | seeds | Δ per seed | mean Δ | 95% CI | p | p (Holm) | verdict |",
             "|---|---|---:|---|---:|---|---:|---:|---|"]
    for c in comparisons:
        ci = "–" if c.interval is None else f"[{c.interval[0]:+.4f}, {c.interval[1]:+.4f}]"
        per_seed = ", ".join(f"{d:+.4f}" for d in c.differences) or "–"
        lines.append(f"| {c.variant} | {titles.get(c.metric, c.metric)} | {len(c.seeds)} | {per_seed} | "
                     f"{_fmt(c.mean)} | {ci} | {format_p(c.p_value)} | {format_p(c.p_holm)} | {c.verdict} |")
    return "\n".join(lines)


def format_assignment_table(rows: Sequence[AssignmentRow]) -> str:
    """Markdown: per variant its assigner, positives per ground truth (mean ± std over seeds) and the share
    of ground truths without a positive (percent), at the first training epoch."""
    head = ["variant", "assigner", *[title for _, title in ASSIGN_STATS], "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r.name, f"`{_md_cell(r.assigner)}`"]
        for key, _ in ASSIGN_STATS:
            value = r.stats.get(key)
            if key == "unmatched_gt" and value is not None:
                mean, std = value
                cells.append(f"{100 * mean:.1f}%" + ("" if std is None else f" ± {100 * std:.1f}%"))
            else:
                cells.append(format_mean_std(value, 2))
        cells.append(str(len(r.seeds)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired_csv(comparisons: Sequence[PairedComparison]) -> str:
    """One CSV line per comparison; seeds and differences space-separated."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "baseline", "metric", "seeds", "differences", "mean", "ci_low", "ci_high", "p",
                "p_holm", "verdict"])
    for c in comparisons:
        low, high = c.interval if c.interval is not None else (None, None)
        w.writerow([c.variant, c.baseline, c.metric, " ".join(map(str, c.seeds)),
                    " ".join(repr(float(d)) for d in c.differences), _csv(c.mean), _csv(low), _csv(high),
                    _csv(c.p_value), _csv(c.p_holm), c.verdict])
    return buf.getvalue()


def format_error_table(breakdowns: dict[str, dict[int, ErrorBreakdown]]) -> str:
    """Markdown: per variant (seed -> :class:`ErrorBreakdown`), the runs counted, mAP50 as the breakdown computes
    it, and per error type the mAP50 gained by fixing it, ``+gain (count)``, means over the runs."""
    head = ["variant", "runs", "mAP50", *[f"{title} ({key})" for key, title in ERROR_TYPES]]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, per_seed in breakdowns.items():
        runs, n = list(per_seed.values()), len(per_seed)
        cells = [name, str(n), f"{sum(r.ap50 for r in runs) / n:.4f}"]
        for key, _ in ERROR_TYPES:
            gain, count = sum(r.delta[key] for r in runs) / n, sum(r.counts[key] for r in runs) / n
            cells.append(f"+{gain:.4f} ({count:.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_errors_csv(breakdowns: dict[str, dict[int, ErrorBreakdown]]) -> str:
    """One CSV line per run: variant, seed, mAP50, then per error type its mAP50 gain and its count."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", "mAP50", *[f"gain_{k}" for k, _ in ERROR_TYPES],
                *[f"count_{k}" for k, _ in ERROR_TYPES]])
    for name, per_seed in breakdowns.items():
        for seed, r in per_seed.items():
            w.writerow([name, seed, _csv(r.ap50), *[_csv(r.delta[k]) for k, _ in ERROR_TYPES],
                        *[r.counts[k] for k, _ in ERROR_TYPES]])
    return buf.getvalue()
