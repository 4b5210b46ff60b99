"""A finished run's numbers read from its folder, and their aggregation into one summary row per variant."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from detector.ablation.spec import Variant
from detector.ablation.stats import mean_std

SUMMARY_METRICS = (("mAP", "mAP50-95"), ("mAP50", "mAP50"), ("mAP75", "mAP75"))
"""COCO stats of the summary table: (key in results.json ``stats``, column title)."""
DELTA_METRICS = ("mAP", "mAP50")
"""Stats whose difference to the baseline variant gets a column."""


@dataclass(frozen=True)
class RunResult:
    """A finished run's numbers.

    Attributes:
        variant, seed: which run.
        stats: the 12 COCO stats of its final evaluation (``results.json`` ``stats``).
        losses: the mean loss terms of its last epoch (``lbox``, ``lobj``, ``lcls``, ...).
        train_time_s: training time in seconds (accumulated over resumes).
        history: the ``history.jsonl`` records, one per epoch.
        world_size: the processes it trained with (``results.json`` ``world_size``; 1 when absent).
    """

    variant: str
    seed: int
    stats: dict[str, float]
    losses: dict[str, float]
    train_time_s: float
    history: list[dict]
    world_size: int = 1


def read_run_result(run_dir: str | Path, variant: str, seed: int) -> RunResult | None:
    """The :class:`RunResult` of a finished run folder, or None when it has no ``results.json``."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    history_path = run_dir / "history.jsonl"
    history = ([json.loads(ln) for ln in history_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
               if history_path.is_file() else [])
    return RunResult(variant, seed, dict(data.get("stats", {})), dict(data.get("train", {})),
                     float(data.get("train_time_s", 0.0)), history, int(data.get("world_size", 1)))


@dataclass(frozen=True)
class VariantRow:
    """One row of the summary table.

    Attributes:
        name, overrides: the variant.
        seeds: seeds with a finished run; planned: how many seeds were planned.
        metrics: COCO stat key -> (mean, sample std or None) over the finished seeds (empty when none).
        deltas: key of :data:`DELTA_METRICS` -> mean minus the baseline variant's mean (None for the
            baseline's row or when either has no finished run).
        losses: loss term -> mean over seeds of the last-epoch value.
        train_time_s: mean training time per run, or None.
    """

    name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    planned: int
    metrics: dict[str, tuple[float, float | None]]
    deltas: dict[str, float | None]
    losses: dict[str, float]
    train_time_s: float | None


def summarize(variants: Sequence[Variant], results: Sequence[RunResult], planned_seeds: int,
              baseline: str | None = None) -> list[VariantRow]:
    """Aggregate per-run results into one :class:`VariantRow` per variant, in the order of ``variants``;
    deltas against ``baseline`` (default: the first variant)."""
    rows = []
    for v in variants:
        mine = sorted((r for r in results if r.variant == v.name), key=lambda r: r.seed)
        metrics, losses, time_s = {}, {}, None
        if mine:
            for key, _ in SUMMARY_METRICS:
                values = [r.stats[key] for r in mine if key in r.stats]
                if values:
                    metrics[key] = mean_std(values)
            terms = dict.fromkeys(k for r in mine for k in r.losses)
            losses = {k: mean_std([r.losses[k] for r in mine if k in r.losses])[0] for k in terms}
            time_s = mean_std([r.train_time_s for r in mine])[0]
        rows.append(VariantRow(v.name, v.overrides, tuple(r.seed for r in mine), planned_seeds, metrics, {},
                               losses, time_s))
    ref = next((r for r in rows if r.name == baseline), rows[0] if rows else None)
    out = []
    for row in rows:
        deltas = {}
        for key in DELTA_METRICS:
            ok = row is not ref and key in row.metrics and key in ref.metrics
            deltas[key] = row.metrics[key][0] - ref.metrics[key][0] if ok else None
        out.append(dataclasses.replace(row, deltas=deltas))
    return out


ASSIGN_STATS = (("pos_per_gt", "positives / gt"), ("unmatched_gt", "unmatched gt"))
"""Assignment statistics of the report (keys of a history record's ``assign``, column titles)."""


def first_epoch_assignment(history: Sequence[dict]) -> dict[str, float]:
    """The ``assign`` section of the earliest epoch that recorded one (``{}`` when none did: a criterion
    without an assigner, or a history written before assignment statistics were logged)."""
    recorded = [rec for rec in history if rec.get("assign")]
    if not recorded:
        return {}
    return {k: float(v) for k, v in min(recorded, key=lambda rec: int(rec["epoch"]))["assign"].items()}


@dataclass(frozen=True)
class AssignmentRow:
    """One variant's assignment statistics at its first training epoch.

    Attributes:
        name: the variant; assigner: its assigner as configured (``"tal {'topk': 10}"``).
        seeds: seeds whose history holds the statistics.
        stats: key of :data:`ASSIGN_STATS` -> (mean, sample std or None) over those seeds.
    """

    name: str
    assigner: str
    seeds: tuple[int, ...]
    stats: dict[str, tuple[float, float | None]]


def summarize_assignment(variants: Sequence[Variant], results: Sequence[RunResult],
                         assigners: dict[str, str]) -> list[AssignmentRow]:
    """One :class:`AssignmentRow` per variant (order of ``variants``); ``assigners``: variant name -> text."""
    rows = []
    for v in variants:
        per_seed = {r.seed: first_epoch_assignment(r.history) for r in results if r.variant == v.name}
        per_seed = {s: a for s, a in sorted(per_seed.items()) if a}
        stats = {}
        for key, _ in ASSIGN_STATS:
            values = [a[key] for a in per_seed.values() if key in a]
            if values:
                stats[key] = mean_std(values)
        rows.append(AssignmentRow(v.name, assigners.get(v.name, "?"), tuple(per_seed), stats))
    return rows
