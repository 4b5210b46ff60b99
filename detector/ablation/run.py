"""Running: train the planned runs in order (skip finished, resume interrupted, record failures), and
:func:`ablate`, the whole ablation from spec to summary, with the runs in this process, in local worker
processes, each under torchrun, or as SLURM jobs (:mod:`~detector.ablation.launch`,
:mod:`~detector.ablation.torchrun`, :mod:`~detector.ablation.slurm`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from detector.ablation.launch import RunOutcome, run_processes, train_one
from detector.ablation.plan import PlannedRun, check_existing_runs, plan_record, plan_runs, run_status
from detector.ablation.report import display_path, write_summary
from detector.ablation.results import VariantRow
from detector.ablation.spec import AblationSpec, default_out_dir
from detector.ablation.stats import PairedComparison
from detector.ablation.torchrun import check_nproc, run_torchrun
from detector.errors import ConfigError

LAUNCHERS = ("local", "slurm", "submitit-local")
"""Where runs train: this machine (in this process, or ``jobs`` processes), SLURM jobs, or submitit's local
executor (the SLURM code path on this machine)."""


def run_all(runs: Sequence[PlannedRun], train: Callable[..., dict], *, progress: bool = True,
            keep_going: bool = True, log: Callable[[str], None] = print,
            after_each: Callable[[], None] | None = None) -> list[RunOutcome]:
    """Train the runs in order in this process with ``train`` (``detector.engine.trainer.fit``'s signature),
    each through :func:`~detector.ablation.launch.train_one`: a run with ``results.json`` is skipped, one with
    ``last.pt`` resumed, a failing one recorded in ``<run_dir>/failed.txt`` and, with ``keep_going``, the next
    run starts. ``after_each()`` runs after every trained run (e.g. to refresh the summary).
    """
    outcomes = []
    for i, run in enumerate(runs, 1):
        status = run_status(run.run_dir)
        head = f"[{i}/{len(runs)}] {run.variant.name} seed {run.seed}"
        if status == "done":
            log(f"{head}: done earlier, skipped ({run.run_dir})")
            outcomes.append(RunOutcome(run, "done"))
            continue
        log(f"{head}: {'resuming' if status == 'partial' else 'training'} in {run.run_dir}  "
            f"({' '.join(run.overrides)})")
        result, error = train_one(run, train, progress)
        outcomes.append(RunOutcome(run, result, error))
        if result == "failed":
            log(f"{head}: FAILED: {error} (traceback in {run.run_dir / 'failed.txt'})")
            if not keep_going:
                break
        if after_each is not None:
            after_each()
    return outcomes


@dataclass(frozen=True)
class AblationReport:
    """What :func:`ablate` did: the run outcomes (empty with ``summary_only``), the summary rows and text,
    the files written, the paired comparisons with the baseline."""

    outcomes: list[RunOutcome]
    rows: list[VariantRow]
    markdown: str
    files: list[Path]
    paired: list[PairedComparison] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def ablate(spec: AblationSpec, out_dir: str | Path | None = None, *, train: Callable[..., dict] | None = None,
           progress: bool = True, keep_going: bool = True, summary_only: bool = False, bootstrap: int = 0,
           jobs: int = 1, threads: int | None = None, launcher: str = "local",
           launcher_params: dict[str, Any] | None = None, executor: Any = None, nproc: int = 1,
           log: Callable[[str], None] = print) -> AblationReport:
    """Validate every run, train what is missing, and write the summary (see the module docstring).

    Args:
        spec: what to run.
        out_dir: the output folder; default ``spec.out`` or :func:`default_out_dir`.
        train: the training function (default ``detector.engine.trainer.fit``).
        progress: progress bars inside each run.
        keep_going: after a failed run, go on with the next one (else stop there).
        summary_only: train nothing; summarise the runs that are finished.
        bootstrap: image resamples of the evaluation-set bootstrap in the final summary (0: none).
        jobs: with the ``local`` launcher, runs at once in separate processes (1: in this process).
        threads: CPU threads per process with ``jobs`` > 1 or a submitit launcher (default: cores // jobs
            locally; the job's own allocation under SLURM).
        launcher: one of :data:`LAUNCHERS`.
        launcher_params: submitit executor parameters (``timeout_min``, ``slurm_partition``, ...).
        executor: a ready submitit executor (overrides ``launcher``'s; tests pass a ``LocalExecutor``).
        nproc: processes (data-parallel ranks) per run. Locally each run is then ``tools/train.py`` under
            torchrun (:mod:`~detector.ablation.torchrun`; ``train`` must be left None), ``jobs`` at a time with
            ``nproc`` GPUs each when CUDA is there; under a submitit launcher one job of ``nproc`` tasks per run
            (:func:`~detector.ablation.slurm.distributed_parameters`). Recorded in ablation.json.
        log: where progress lines go.

    Raises:
        ConfigError: an invalid run config (naming the variant), or run folders holding other configs.
        DatasetError: a dataset file is broken (raised by the first run that reads it).
    """
    out_dir = Path(out_dir if out_dir is not None else spec.out or default_out_dir(spec))
    runs = plan_runs(spec, out_dir)
    check_existing_runs(runs)
    status = [run_status(r.run_dir) for r in runs]
    log(f"Ablation of {len(spec.variants)} variant(s) x {len(spec.seeds)} seed(s) = {len(runs)} runs in {out_dir} "
        f"(base {display_path(spec.base)}): {status.count('done')} done, {status.count('partial')} to resume, "
        f"{status.count('new')} to train")
    outcomes: list[RunOutcome] = []
    if not summary_only:
        check_nproc(runs, nproc)
        if nproc > 1 and launcher == "local" and executor is None and train is not None:
            raise ValueError("ablate(train=...) with nproc > 1 on the local launcher: each run is tools/train.py "
                             "under torchrun, which trains with fit; leave train None")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ablation.json").write_text(json.dumps(plan_record(spec, runs, nproc), indent=2) + "\n",
                                              encoding="utf-8")
        if train is None:
            from detector.engine.trainer import fit as train
        refresh = lambda: write_summary(spec, runs, out_dir, plots=False, errors=False, log=log)  # noqa: E731
        if jobs < 1:
            raise ConfigError("--jobs", f"must be >= 1, got {jobs}", "command line")
        if launcher not in LAUNCHERS:
            raise ConfigError("--launcher", f"unknown launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}",
                              "command line")
        if launcher != "local" or executor is not None:
            from detector.ablation.slurm import (SUBMITIT_DIR, distributed_parameters, make_executor, submit_runs,
                                                 wait_jobs)

            if executor is None:
                cuda = not all(str(r.cfg.train.device).startswith("cpu") for r in runs)
                params = distributed_parameters(dict(launcher_params or {}), nproc, cuda)
                executor = make_executor(launcher, out_dir / SUBMITIT_DIR, params)
            done, submitted = submit_runs(executor, runs, train, threads=threads, log=log)
            order = {id(r): k for k, r in enumerate(runs)}
            outcomes = sorted(done + wait_jobs(runs, submitted, keep_going=keep_going, log=log, after_each=refresh),
                              key=lambda o: order[id(o.run)])
        elif nproc > 1:
            outcomes = run_torchrun(runs, spec.base, nproc, jobs, threads=threads, keep_going=keep_going, log=log,
                                    after_each=refresh)
        elif jobs > 1:
            outcomes = run_processes(runs, train, jobs, threads=threads, keep_going=keep_going, log=log,
                                     after_each=refresh)
        else:
            outcomes = run_all(runs, train, progress=progress, keep_going=keep_going, log=log, after_each=refresh)
    rows, paired, markdown, files = write_summary(spec, runs, out_dir, bootstrap=bootstrap, log=log)
    log(markdown)
    log(f"Summary written to {files[0]} ({', '.join(f.name for f in files[1:])})")
    return AblationReport(outcomes, rows, markdown, files, paired)
