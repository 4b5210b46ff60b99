"""Where the runs train: one at a time in this process, in ``jobs`` local worker processes, or as SLURM jobs.

Every launcher trains a run with :func:`train_one`, which reads the run folder first: finished (``results.json``)
is skipped, interrupted (``last.pt``) is resumed, a failure is written to ``failed.txt``. So any launcher can
pick up what another left, and a preempted SLURM job that is requeued resumes from its ``last.pt``.

* :func:`run_processes` (``--jobs N``): ``N`` spawned worker processes, each with ``torch.set_num_threads``
  of ``threads`` (default: CPU cores // N), and with several GPUs each worker sees one
  (``CUDA_VISIBLE_DEVICES``), so N runs share neither threads nor a GPU. Results do not depend on the
  launcher: on the CPU a run's numbers depend on its config and its thread count only.
* :func:`submit_runs` + :func:`wait_jobs` (``--launcher slurm``): one ``submitit`` job per run (the optional
  ``cluster`` extra); the job's callable (:class:`SubmititRun`) is checkpointable, so on preemption or timeout
  submitit requeues it and the requeued job resumes from ``last.pt``. ``submitit.LocalExecutor`` runs the same
  path on one machine (``--launcher submitit-local``).
* runs of several processes each (``--nproc-per-run N``): :mod:`~detector.ablation.torchrun` locally (each run
  ``tools/train.py`` under torchrun), one job of N tasks per run under SLURM (:mod:`~detector.ablation.slurm`).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from detector.ablation.plan import PlannedRun, run_status


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one planned run: ``status`` is done (already finished), trained, resumed or failed."""

    run: PlannedRun
    status: str
    error: str | None = None


def train_one(run: PlannedRun, train: Callable[..., Any], progress: bool = True,
              threads: int | None = None, main: bool = True) -> tuple[str, str | None]:
    """Train, resume or skip one run by what its folder holds; ``(status, error message or None)``.

    ``train(cfg, run_dir=..., progress=...)`` for a new run, ``train(cfg, resume=<run_dir>/last.pt, ...)`` for an
    interrupted one. An exception is written with its traceback to ``<run_dir>/failed.txt`` and returned as
    ``"failed"`` (KeyboardInterrupt and SystemExit, e.g. a SLURM preemption, propagate). ``threads``: set
    ``torch.set_num_threads`` first. ``main``: False on the ranks other than 0 of a data-parallel run, which
    leave ``failed.txt`` to rank 0.
    """
    status = run_status(run.run_dir)
    if status == "done":
        return "done", None
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    failed = run.run_dir / "failed.txt"
    try:
        if status == "partial":
            train(run.cfg, resume=run.run_dir / "last.pt", progress=progress)
        else:
            train(run.cfg, run_dir=run.run_dir, progress=progress)
    except Exception as exc:  # one diverging variant must not cost the others
        if main:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            failed.write_text(traceback.format_exc(), encoding="utf-8")
        return "failed", f"{type(exc).__name__}: {exc}"
    finally:
        release_memory()
    if main:
        failed.unlink(missing_ok=True)
    return ("resumed" if status == "partial" else "trained"), None


def release_memory() -> None:
    """Free what the finished run left behind (cyclic garbage, cached CUDA blocks) before the next one."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _describe(run: PlannedRun, i: int, n: int) -> str:
    return f"[{i}/{n}] {run.variant.name} seed {run.seed}"


def _finished(outcome: RunOutcome, head: str, log: Callable[[str], None]) -> None:
    if outcome.status == "failed":
        log(f"{head}: FAILED: {outcome.error} (traceback in {outcome.run.run_dir / 'failed.txt'})")
    else:
        log(f"{head}: {outcome.status}")


def default_threads(jobs: int) -> int:
    """CPU threads per worker: the cores this process may use, divided among ``jobs`` (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def _init_worker(slots, gpus: Sequence[int]) -> None:
    """Worker start: take a slot number; with GPUs, see only GPU ``gpus[slot % len(gpus)]``."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])


def visible_gpus(runs: Sequence[PlannedRun]) -> list[int]:
    """GPU indices to spread workers over: every CUDA device when there are several and some run may use one
    (``train.device`` not ``cpu``), else none."""
    if all(str(r.cfg.train.device).startswith("cpu") for r in runs):
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return list(range(count)) if count > 1 else []


def run_processes(runs: Sequence[PlannedRun], train: Callable[..., Any], jobs: int, *, threads: int | None = None,
                  keep_going: bool = True, log: Callable[[str], None] = print,
                  after_each: Callable[[], None] | None = None) -> list[RunOutcome]:
    """Train the runs in ``jobs`` spawned processes (``train`` must be picklable, e.g. ``fit``); outcomes in the
    order of ``runs``. Finished runs are skipped without a process; progress bars are off (they would interleave).
    Without ``keep_going`` the first failure cancels the runs not yet started."""
    threads = threads if threads is not None else default_threads(jobs)
    outcomes, todo = skip_done(runs, log)
    if todo:
        gpus = visible_gpus([runs[i] for i in todo])
        log(f"{len(todo)} run(s) in {jobs} processes, {threads} CPU thread(s) each"
            + (f", GPUs {gpus} in turn" if gpus else ""))
        context = multiprocessing.get_context("spawn")  # fork would copy this process's torch threads and state
        slots = context.Queue()  # handed to each worker at its start
        for k in range(jobs):
            slots.put(k)
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(slots, gpus)) as pool:
            pending = {}
            for i in todo:
                run = runs[i]
                verb = "resuming" if run_status(run.run_dir) == "partial" else "training"
                log(f"{_describe(run, i + 1, len(runs))}: {verb} in {run.run_dir}  ({' '.join(run.overrides)})")
                pending[pool.submit(train_one, run, train, False, threads)] = i
            collect(pending, runs, outcomes, keep_going, log, after_each)
    return [outcomes[i] for i in sorted(outcomes)]


def skip_done(runs: Sequence[PlannedRun], log: Callable[[str], None]) -> tuple[dict[int, "RunOutcome"], list[int]]:
    """({index: "done" outcome} for the runs finished earlier (logged as skipped), the indices still to train)."""
    outcomes: dict[int, RunOutcome] = {}
    todo = []
    for i, run in enumerate(runs):
        if run_status(run.run_dir) == "done":
            log(f"{_describe(run, i + 1, len(runs))}: done earlier, skipped ({run.run_dir})")
            outcomes[i] = RunOutcome(run, "done")
        else:
            todo.append(i)
    return outcomes, todo


def collect(pending: dict, runs: Sequence[PlannedRun], outcomes: dict[int, "RunOutcome"], keep_going: bool,
            log: Callable[[str], None], after_each: Callable[[], None] | None) -> None:
    """Wait for the futures of ``pending`` (future -> run index, each returning ``(status, error)``) and record
    their outcomes as they finish; without ``keep_going`` the first failure cancels the runs not yet started."""
    stop = False
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            i = pending.pop(future)
            if future.cancelled():
                continue
            status, error = future.result()
            outcomes[i] = RunOutcome(runs[i], status, error)
            _finished(outcomes[i], _describe(runs[i], i + 1, len(runs)), log)
            if status == "failed" and not keep_going and not stop:
                stop = True
                for other in pending:
                    other.cancel()
            if after_each is not None:
                after_each()
