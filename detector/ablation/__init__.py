"""Ablations: train one base config under named variants and seeds, then compare the runs with COCO mAP.

An ablation is a base training config, overrides common to every run, named variants (each a list of
``key=value`` overrides, e.g. ``loss.box=giou``) and seeds. Written as YAML::

    base: ../yolov5_ciou.yaml          # relative to this file, or a bare name looked up in configs/
    set: [train.epochs=30, data.img_size=320]
    seeds: [0, 1]
    variants:
      ciou: [loss.box=ciou]
      giou: [loss.box=giou]
      focal_eiou: ["loss.box={name: focal_eiou, gamma: 0.5}"]
    baseline: ciou                     # optional; the variant the others are compared with (default: the first)
    out: runs/ablate/box               # optional; relative to the current directory

or on the command line (``tools/ablate.py --cfg yolov5_ciou --vary loss.box=ciou,giou --seeds 0 1``).

The run of variant ``v`` with seed ``k`` uses the overrides ``set + variants[v] + [train.seed=k]`` (later
items win, as with ``tools/train.py --set``). Every run's config is loaded and validated before anything
trains (:func:`plan_runs`), so a typo in the fifth variant fails at once, naming the variant.

Output folder::

    out/ablation.json            the plan: base file, common overrides, seeds, variants, processes per run, each
                                 run's overrides
    out/<variant>/seed<k>/       one ``fit()`` run directory (config.yaml, last.pt, history.jsonl, results.json,
                                 detections.json: the final evaluation's detections; torchrun.log under torchrun)
    out/summary.md, summary.csv  one row per variant: mAP mean +- std over seeds, delta vs the baseline; in
                                 summary.md also the paired comparisons (per-seed differences, 95% t-interval,
                                 Holm-corrected verdict) and, when the assigner varies, assignment statistics
    out/paired.csv               one row per (variant, metric) paired comparison with the baseline
    (summary.md, with ``bootstrap=R``: the image bootstrap CI of each variant's mAP gap, from detections.json)
    (summary.md: the TIDE error breakdown of each variant, from detections.json; per run in errors.csv)
    out/runs.csv                 one row per finished run: the 12 COCO stats, final loss terms, time
    out/map_curves.png, out/loss_curves.png, out/map_ci.png   (when matplotlib is installed)
    out/hparams/<variant>_seed<k>/   TensorBoard HParams sessions (``tensorboard --logdir out/hparams``)
    out/submitit/                job files of ``launcher="slurm"`` / ``"submitit-local"``

Runs go seed-major (every variant with the first seed, then every variant with the second seed, ...), so an
interrupted ablation already holds a comparable table. Running the same ablation again skips finished runs
(``results.json`` present) and resumes interrupted ones (``last.pt`` present) with ``fit(resume=...)``; a run
folder that holds a different config than planned is reported before anything trains, never mixed in.
Runs train in this process, in ``jobs`` worker processes, or as SLURM jobs through submitit, and with ``nproc`` > 1
each run data-parallel over ``nproc`` processes (torchrun locally, ``nproc`` tasks under SLURM; ``ablation.json``
records ``nproc_per_run``, each ``results.json`` its ``world_size``); each launcher reads the run folders the same
way, so one can finish what another started.

Modules, one job each: :mod:`~detector.ablation.spec` (the spec from YAML or ``--vary``),
:mod:`~detector.ablation.plan` (validated runs, stale-folder check), :mod:`~detector.ablation.run` (training the
runs, :func:`ablate`), :mod:`~detector.ablation.results` (a run folder's numbers, one row per variant),
:mod:`~detector.ablation.stats` (pure statistics: Student's t, paired comparisons, Holm),
:mod:`~detector.ablation.bootstrap` (paired bootstrap over evaluation images),
:mod:`~detector.ablation.errors` (TIDE error breakdown), :mod:`~detector.ablation.launch` (one run, worker
processes), :mod:`~detector.ablation.torchrun` (runs of several processes under torchrun),
:mod:`~detector.ablation.slurm` (submitit jobs), :mod:`~detector.ablation.hparams` (TensorBoard),
:mod:`~detector.ablation.tables` (markdown and CSV tables), :mod:`~detector.ablation.report` (the summary files),
:mod:`~detector.ablation.plots` (curves and figures).
"""
from detector.ablation.plan import (
    IGNORED_CONFIG_KEYS,
    PlannedRun,
    check_existing_runs,
    config_differences,
    plan_record,
    plan_runs,
    run_status,
    validate_config,
)
from detector.ablation.errors import ERROR_TYPES, ErrorBreakdown, error_breakdown
from detector.ablation.hparams import write_hparams
from detector.ablation.launch import run_processes, train_one
from detector.ablation.plots import draw_paired, epoch_curve, history_values, write_plots
from detector.ablation.report import format_markdown, write_summary
from detector.ablation.results import (
    DELTA_METRICS,
    SUMMARY_METRICS,
    AssignmentRow,
    RunResult,
    VariantRow,
    first_epoch_assignment,
    read_run_result,
    summarize,
    summarize_assignment,
)
from detector.ablation.run import LAUNCHERS, AblationReport, RunOutcome, ablate, run_all
from detector.ablation.spec import (
    SPEC_KEYS,
    AblationSpec,
    Variant,
    default_out_dir,
    load_spec,
    spec_from_vary,
    split_values,
    value_name,
    with_cli_overrides,
)
from detector.ablation.torchrun import check_nproc, gpu_groups, run_torchrun, torchrun_command
from detector.ablation.stats import (
    PairedComparison,
    holm,
    mean_std,
    paired_comparisons,
    paired_t,
    student_t_cdf,
    student_t_quantile,
)
from detector.ablation.tables import (
    format_assignment_table,
    format_duration,
    format_markdown_table,
    format_mean_std,
    format_paired_csv,
    format_paired_table,
    format_runs_csv,
    format_summary_csv,
)

__all__ = [
    "DELTA_METRICS", "ERROR_TYPES", "IGNORED_CONFIG_KEYS", "LAUNCHERS", "SPEC_KEYS", "SUMMARY_METRICS",
    "AblationReport", "AblationSpec", "AssignmentRow", "ErrorBreakdown", "PairedComparison", "PlannedRun",
    "RunOutcome", "RunResult", "Variant", "VariantRow",
    "check_nproc", "draw_paired", "error_breakdown", "gpu_groups", "run_processes", "run_torchrun", "torchrun_command",
    "train_one", "write_hparams",
    "ablate", "check_existing_runs", "config_differences", "default_out_dir", "epoch_curve",
    "first_epoch_assignment", "format_assignment_table", "format_duration", "format_markdown",
    "format_markdown_table", "format_mean_std", "format_paired_csv", "format_paired_table", "format_runs_csv",
    "format_summary_csv", "history_values", "holm", "load_spec", "mean_std", "paired_comparisons", "paired_t",
    "plan_record", "plan_runs", "read_run_result", "run_all", "run_status", "spec_from_vary", "split_values",
    "student_t_cdf", "student_t_quantile", "summarize", "summarize_assignment", "validate_config", "value_name",
    "with_cli_overrides", "write_plots", "write_summary",
]
