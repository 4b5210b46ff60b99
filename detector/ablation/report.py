"""The summary files: ``summary.md`` (what was compared, the tables, notes), ``summary.csv``, ``paired.csv``,
``runs.csv``, and the plots."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from detector.ablation.bootstrap import BootstrapResult, bootstrap_draws, paired_bootstrap, read_detections
from detector.ablation.errors import ErrorBreakdown, error_breakdown
from detector.ablation.hparams import write_hparams
from detector.ablation.plan import PlannedRun, run_status
from detector.ablation.plots import write_plots
from detector.ablation.results import (
    SUMMARY_METRICS,
    AssignmentRow,
    VariantRow,
    read_run_result,
    summarize,
    summarize_assignment,
)
from detector.ablation.spec import AblationSpec
from detector.ablation.stats import ALPHA, PairedComparison, paired_comparisons
from detector.ablation.tables import (
    format_assignment_table,
    format_error_table,
    format_errors_csv,
    format_markdown_table,
    format_paired_csv,
    format_paired_table,
    format_runs_csv,
    format_summary_csv,
)
from detector.config import PartSpec


def paired_section(comparisons: Sequence[PairedComparison], baseline: str) -> list[str]:
    """The markdown lines of the paired comparisons: what was computed, that Holm was applied, the table."""
    variants = list(dict.fromkeys(c.variant for c in comparisons))
    return [
        f"## Paired differences against the baseline `{baseline}`",
        "",
        "Per seed, variant minus baseline on the same seed (same initialisation and data order), over the seeds "
        "both finished: the mean difference, its 95% t-interval (Student's t with n − 1 degrees of freedom) and "
        f"the two-sided paired t-test. **Holm correction applied** to the p-values over the {len(variants)} "
        f"variant(s) compared, separately for each metric; the verdict reads the Holm p-value at the "
        f"{ALPHA:.0%} level (the interval itself is not adjusted). \"not distinguishable from noise\": the gap is "
        "within what other seeds give, not evidence that the variants are equal; with one common seed there is "
        "no interval and no verdict.",
        "",
        format_paired_table(comparisons),
    ]


def assignment_section(rows: Sequence[AssignmentRow]) -> list[str]:
    """The markdown lines of the assignment statistics (shown when the assigner differs between variants)."""
    return [
        "## Assignment (the assigner differs between variants)",
        "",
        "From each run's first training epoch (`assign` in history.jsonl), mean ± std over seeds: positives / gt "
        "= positive (prior, ground truth) pairs per ground-truth box; unmatched gt = share of ground-truth boxes "
        "without any positive.",
        "",
        format_assignment_table(rows),
    ]


def bootstrap_section(results: dict[str, BootstrapResult], baseline: str, num_seeds: dict[str, int]) -> list[str]:
    """The markdown lines of the evaluation-set bootstrap: one line per variant."""
    first = next(iter(results.values()))
    lines = [
        f"## Evaluation-set bootstrap against `{baseline}` ({first.metric})",
        "",
        f"{len(first.deltas)} resamples of the evaluated images with replacement; both variants' saved detections "
        "(detections.json) re-scored with pycocotools on the same resample, the difference averaged over the seed "
        f"pairs; {first.level:.0%} percentile interval. It measures how much the finite evaluation set alone "
        "moves the gap (the paired table above measures the seeds).",
        "",
        "| variant | seed pairs | Δ on the full set | bootstrap CI |",
        "|---|---:|---:|---|",
    ]
    for name, r in results.items():
        low, high = r.interval
        lines.append(f"| {name} | {num_seeds[name]} | {r.observed:+.4f} | [{low:+.4f}, {high:+.4f}] |")
    return lines


def saved_detections(runs: Sequence[PlannedRun]) -> dict[tuple[str, int], Path]:
    """``{(variant, seed): detections.json}`` of the runs that finished and saved their final detections."""
    return {(r.variant.name, r.seed): r.run_dir / "detections.json" for r in runs
            if (r.run_dir / "results.json").is_file() and (r.run_dir / "detections.json").is_file()}


def evaluation_ground_truth(runs: Sequence[PlannedRun]):
    """The pycocotools ground truth of the evaluation split of the first run's config (every run evaluates it);
    annotations only, no image is decoded even under ``data.cache_images``."""
    from detector.build import build_dataset

    cfg = runs[0].cfg
    return build_dataset(cfg, cfg.eval.split, images=False).coco_gt()


def bootstrap_variants(spec: AblationSpec, runs: Sequence[PlannedRun], resamples: int, seed: int = 0,
                       coco_gt=None) -> tuple[dict[str, BootstrapResult], dict[str, int]]:
    """Per variant, the paired image bootstrap of mAP against the baseline over the seeds where both runs saved
    ``detections.json`` (variants without such a seed are left out). The ground truth: ``coco_gt``, default
    :func:`evaluation_ground_truth`."""
    saved = saved_detections(runs)
    if not saved or not runs:
        return {}, {}
    coco_gt = coco_gt if coco_gt is not None else evaluation_ground_truth(runs)
    out, counts = {}, {}
    for v in spec.variants:
        seeds = [s for s in spec.seeds if v.name != spec.reference and (v.name, s) in saved
                 and (spec.reference, s) in saved]
        if not seeds:
            continue
        image_ids, _ = read_detections(saved[(spec.reference, seeds[0])])
        pairs = [(read_detections(saved[(spec.reference, s)])[1], read_detections(saved[(v.name, s)])[1])
                 for s in seeds]
        out[v.name] = paired_bootstrap(coco_gt, image_ids, pairs, bootstrap_draws(len(image_ids), resamples, seed))
        counts[v.name] = len(seeds)
    return out, counts


def error_variants(spec: AblationSpec, runs: Sequence[PlannedRun],
                   coco_gt=None) -> dict[str, dict[int, ErrorBreakdown]]:
    """Per variant (spec order; variants without saved detections left out), seed -> the TIDE error breakdown
    of that finished run's ``detections.json`` on its evaluated images
    (:func:`~detector.ablation.errors.error_breakdown`)."""
    saved = saved_detections(runs)
    if not saved:
        return {}
    coco_gt = coco_gt if coco_gt is not None else evaluation_ground_truth(runs)
    out: dict[str, dict[int, ErrorBreakdown]] = {}
    for (name, seed), path in sorted(saved.items(), key=lambda kv: kv[0][1]):
        image_ids, dets = read_detections(path)
        out.setdefault(name, {})[seed] = error_breakdown(coco_gt, dets, image_ids)
    return {v.name: out[v.name] for v in spec.variants if v.name in out}


def error_section(breakdowns: dict[str, dict[int, ErrorBreakdown]]) -> list[str]:
    """The markdown lines of the error breakdown."""
    return [
        "## Error breakdown (TIDE, IoU 0.5)",
        "",
        "From each run's detections.json (Bolya et al. 2020): every false positive typed as classification, "
        "localisation (IoU 0.1–0.5 with a box of its class), both, duplicate or background (IoU ≤ 0.1 with "
        "everything), every unfound ground truth not claimed by a cls/loc error as missed. Cell: mAP50 gained if "
        "every error of that type were fixed (the oracle of TIDE, from the mAP50 column), and in parentheses how "
        "many errors of that type a run has; means over the runs. A box-loss change should move `loc`.",
        "",
        format_error_table(breakdowns),
    ]


def processes_line(world_sizes: Sequence[int]) -> str | None:
    """The header line on data parallelism from the finished runs' ``world_size``: None when every run had one
    process (or none finished); ``[2, 2]`` -> ``"- processes per run: 2 (...)"``; mixed sizes are listed."""
    sizes = sorted(set(world_sizes))
    if not sizes or sizes == [1]:
        return None
    how = ("data-parallel: `train.batch_size` is each run's global batch, split over its ranks; with "
           "`train.sync_bn` a run equals the one-process run up to float summation order, without it each rank's "
           "batch norm sees its own slice; time is wall time")
    if len(sizes) == 1:
        return f"- processes per run: {sizes[0]} ({how})"
    counts = ", ".join(f"{n} for {list(world_sizes).count(n)} run(s)" for n in sizes)
    return f"- processes per run: **differ** ({counts}; {how})"


def format_markdown(spec: AblationSpec, rows: Sequence[VariantRow], dataset: str, split: str,
                    notes: Sequence[str] = (), *, paired: Sequence[PairedComparison] = (),
                    assignment: Sequence[AssignmentRow] = (), bootstrap: Sequence[str] = (),
                    errors: Sequence[str] = (), world_sizes: Sequence[int] = ()) -> str:
    """The whole ``summary.md``: what was compared (base config, common overrides, seeds, metric, processes per
    run from the finished runs' ``world_sizes``), the table, ``notes`` (missing or failed runs), then the paired
    comparisons, the bootstrap section's lines, the error breakdown's lines and the assignment statistics when given."""
    common = " ".join(f"`{o}`" for o in spec.common) or "none"
    std_note = ("mean ± sample standard deviation (n − 1) over seeds" if len(spec.seeds) > 1
                else "one seed, so no standard deviation")
    lines = [
        f"# Ablation ({spec.source})",
        "",
        f"- base config: `{display_path(spec.base)}`",
        f"- common overrides: {common}",
        f"- seeds: {', '.join(str(s) for s in spec.seeds)} (`train.seed`)",
        f"- metric: COCO bbox mAP (pycocotools) of each run's final evaluation on split `{split}` of "
        f"`{dataset}`; {std_note}; Δ = difference of the means to the baseline `{spec.reference}`.",
        "- loss columns: mean loss term of the last training epoch (the terms of different losses are on "
        "different scales: compare a loss across variants only where it is the same function); time: "
        "training time per run.",
    ]
    processes = processes_line(world_sizes)
    lines += [processes] if processes else []
    lines += ["", format_markdown_table(rows, spec.reference)]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    if paired:
        lines += ["", *paired_section(paired, spec.reference)]
    if bootstrap:
        lines += ["", *bootstrap]
    if errors:
        lines += ["", *errors]
    if assignment:
        lines += ["", *assignment_section(assignment)]
    return "\n".join(lines) + "\n"


def display_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def describe_part(part: PartSpec) -> str:
    """``PartSpec("tal", {"topk": 10})`` -> ``"tal {'topk': 10}"``; without parameters just the name."""
    return f"{part.name} {part.params}" if part.params else part.name


def write_summary(spec: AblationSpec, runs: Sequence[PlannedRun], out_dir: str | Path, *, plots: bool = True,
                  bootstrap: int = 0, errors: bool = True, log: Callable[[str], None] = print
                  ) -> tuple[list[VariantRow], list[PairedComparison], str, list[Path]]:
    """Read the finished runs and write summary.md, summary.csv, paired.csv, runs.csv; when ``plots``, the plots
    and TensorBoard's hparams sessions (:func:`~detector.ablation.hparams.write_hparams`); with ``bootstrap`` > 0
    that many image resamples per variant (:func:`bootstrap_variants`); with ``errors`` the TIDE error breakdown
    of the runs that saved detections (:func:`error_variants`, also errors.csv).

    Returns ``(rows, paired comparisons, markdown, files written)``. Unfinished runs are listed under the table;
    the assignment table is included when the planned runs' assigners differ.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, notes = [], []
    for run in runs:
        result = read_run_result(run.run_dir, run.variant.name, run.seed)
        if result is not None:
            results.append(result)
        elif (run.run_dir / "failed.txt").is_file():
            notes.append(f"{run.variant.name} seed {run.seed}: failed (see {run.run_dir / 'failed.txt'})")
        else:
            notes.append(f"{run.variant.name} seed {run.seed}: not finished ({run_status(run.run_dir)})")
    rows = summarize(spec.variants, results, len(spec.seeds), spec.reference)
    paired = paired_comparisons(results, [v.name for v in spec.variants], spec.reference,
                                [key for key, _ in SUMMARY_METRICS])
    assigners = {run.variant.name: describe_part(run.cfg.assigner) for run in runs}
    assignment = (summarize_assignment(spec.variants, results, assigners)
                  if len(set(assigners.values())) > 1 else [])
    boot_lines: list[str] = []
    error_lines: list[str] = []
    extra: list[tuple[Path, str]] = []  # optional files: (path, text)
    if (errors or bootstrap > 0) and saved_detections(runs):
        coco_gt = evaluation_ground_truth(runs)
        if errors:
            breakdowns = error_variants(spec, runs, coco_gt)
            error_lines = error_section(breakdowns) if breakdowns else []
            if breakdowns:
                extra.append((out_dir / "errors.csv", format_errors_csv(breakdowns)))
        if bootstrap > 0:
            boot, counts = bootstrap_variants(spec, runs, bootstrap, coco_gt=coco_gt)
            boot_lines = bootstrap_section(boot, spec.reference, counts) if boot else []
    first = runs[0].cfg if runs else None
    markdown = format_markdown(spec, rows, first.data.dataset if first else "?", first.eval.split if first else "?",
                               notes, paired=paired, assignment=assignment, bootstrap=boot_lines,
                               errors=error_lines, world_sizes=[r.world_size for r in results])
    files = [out_dir / name for name in ("summary.md", "summary.csv", "paired.csv", "runs.csv")]
    for path, text in zip(files, (markdown, format_summary_csv(rows), format_paired_csv(paired),
                                  format_runs_csv(results))):
        path.write_text(text, encoding="utf-8")
    for path, text in extra:
        path.write_text(text, encoding="utf-8")
        files.append(path)
    if plots:
        written = write_plots(spec.variants, results, out_dir, paired)
        if written is None:
            log("matplotlib is not installed: skipping map_curves.png and loss_curves.png "
                "(pip install matplotlib, or the project's `plot` extra)")
        else:
            files += written
        hparams = write_hparams(spec.variants, results, out_dir)
        if hparams is not None:
            files.append(hparams)
    return rows, paired, markdown, files
