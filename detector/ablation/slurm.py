"""Runs as SLURM jobs through ``submitit`` (``pip install submitit``, or the project's ``cluster`` extra).

One job per run that is not finished. The job calls :func:`~detector.ablation.launch.train_one`, which resumes
from ``last.pt`` when the folder holds one; :class:`SubmititRun` is checkpointable, so when SLURM preempts the
job or its time limit nears (submitit's USR2 signal), submitit requeues the same callable, and the requeued job
resumes from the last finished epoch. The submitting process waits for every job and writes the summary;
interrupting it leaves the jobs running, and ``--summary-only`` later writes the report from the run folders.
Executor files (job scripts, logs, pickles) go to ``<out>/submitit/``.

A run of ``nproc`` processes (``--nproc-per-run N``) is one job of N tasks on one node (with CUDA N GPUs:
:func:`distributed_parameters`). srun starts the tasks, not torchrun: each task maps what SLURM says about it to the
variables torchrun would have set (:func:`torch_env_from_job`, as ``submitit.helpers.TorchDistributedEnvironment``
does, but every GPU of the node stays visible, since ``fit`` takes ``cuda:LOCAL_RANK``), then calls ``fit`` like
a torchrun rank. On preemption submitit's task 0 requeues the whole job; every task then resumes from ``last.pt``.
"""
from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from detector.ablation.launch import RunOutcome, _describe, _finished, train_one
from detector.ablation.plan import PlannedRun, run_status
from detector.errors import ConfigError

SUBMITIT_DIR = "submitit"
"""Folder of the ablation holding submitit's job files."""


def import_submitit():
    """The ``submitit`` module, or a ConfigError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher", "needs the submitit package: pip install submitit (or the project's "
                                        "`cluster` extra: pip install -e .[cluster])", "command line") from None
    return submitit


class SubmititRun:
    """The callable of one job: trains (or resumes, or skips) ``run`` with ``train``; checkpointable.

    ``checkpoint()`` is what submitit calls on preemption or timeout: it resubmits this same callable, which
    then finds ``last.pt`` (written by ``fit`` after every epoch) and resumes from it.
    """

    def __init__(self, run: PlannedRun, train: Callable[..., Any], threads: int | None = None):
        self.run, self.train, self.threads = run, train, threads

    def __call__(self) -> tuple[str, str | None]:
        env = torch_env_from_job(os.environ)
        main = True
        if int(env.get("WORLD_SIZE", "1")) > 1:  # a job of several tasks: the ranks of one data-parallel run
            os.environ.update(env)
            main = env["RANK"] == "0"
        return train_one(self.run, self.train, progress=False, threads=self.threads, main=main)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


_TASK_KEYS = {  # (rank, tasks, local rank, nodes, job id) as SLURM and submitit's LocalExecutor name them
    "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NUM_NODES", "SLURM_JOB_ID"),
    "local": ("SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_LOCALID",
              "SUBMITIT_LOCAL_JOB_NUM_NODES", "SUBMITIT_LOCAL_JOB_ID"),
}


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[03-05,07],cpu1"`` -> ``"gpu03"``, ``"a7,a8"`` -> ``"a7"``,
    ``"n[1-2]-ib"`` -> ``"n1-ib"``, ``""`` -> ``""``."""
    group = re.match(r"(?:[^,\[]|\[[^\]]*\])*", nodelist.strip()).group()  # up to the first comma outside [...]
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], group)


def torch_env_from_job(env: Mapping[str, str]) -> dict[str, str]:
    """What ``torchrun`` would set for this task, from what SLURM (or submitit's LocalExecutor) set: ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; ``{}`` outside a job.

    ``MASTER_ADDR``: the first host of ``SLURM_JOB_NODELIST`` (``127.0.0.1`` under the LocalExecutor).
    ``MASTER_PORT``: ``env``'s own when set, else ``20000 + job id mod 40000``: the same for every task of the job
    and for the job after a requeue (SLURM keeps its id). ``CUDA_VISIBLE_DEVICES`` is left alone.
    """
    kind = "slurm" if "SLURM_JOB_ID" in env else "local" if "SUBMITIT_LOCAL_JOB_ID" in env else None
    if kind is None:
        return {}
    rank, tasks, local_rank, nodes, job = (env.get(k, "") for k in _TASK_KEYS[kind])
    tasks, nodes = int(tasks or 1), int(nodes or 1)
    port = env.get("MASTER_PORT") or str(20000 + (int(job) if job.isdigit() else zlib.crc32(job.encode())) % 40000)
    addr = (first_host(env.get("SLURM_JOB_NODELIST", "")) if kind == "slurm" else "") or "127.0.0.1"
    return {"RANK": rank or "0", "WORLD_SIZE": str(tasks), "LOCAL_RANK": local_rank or "0",
            "LOCAL_WORLD_SIZE": str(tasks // max(nodes, 1)), "MASTER_ADDR": addr, "MASTER_PORT": port}


def distributed_parameters(params: Mapping[str, Any], nproc: int, cuda: bool) -> dict[str, Any]:
    """Executor parameters for runs of ``nproc`` processes: ``params`` plus one node, ``nproc`` tasks and, with
    ``cuda``, ``nproc`` GPUs on it (``params`` unchanged for ``nproc`` 1). Raises ConfigError when ``params``
    says otherwise, or asks ``gpus_per_task`` (each task must see all the node's GPUs)."""
    if nproc == 1:
        return dict(params)
    wanted = {"nodes": 1, "tasks_per_node": nproc, **({"gpus_per_node": nproc} if cuda else {})}
    for key, value in wanted.items():
        if key in params and params[key] != value:
            raise ConfigError("--slurm", f"{key}={params[key]} contradicts --nproc-per-run {nproc}, which sets "
                                         f"{key}={value}; leave {key} out", "command line")
    if "gpus_per_task" in params:
        raise ConfigError("--slurm", f"gpus_per_task with --nproc-per-run {nproc}: every rank takes "
                                     "cuda:LOCAL_RANK of the GPUs it sees; leave gpus_per_task out (gpus_per_node is "
                                     "set for you)", "command line")
    return {**params, **wanted}


def parse_parameters(items: Sequence[str]) -> dict[str, Any]:
    """``["slurm_partition=gpu", "timeout_min=600"]`` -> ``{"slurm_partition": "gpu", "timeout_min": 600}``
    (values parsed as YAML); raises ConfigError naming an item without ``=``."""
    params = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError("--slurm", f"{item!r} is not KEY=VALUE (e.g. slurm_partition=gpu, timeout_min=600, "
                                         "gpus_per_node=1, cpus_per_task=8)", "command line")
        params[key.strip()] = yaml.safe_load(value)
    return params


def make_executor(kind: str, folder: str | Path, parameters: dict[str, Any]):
    """A submitit executor: ``kind`` ``slurm`` (``AutoExecutor`` on the SLURM cluster) or ``submitit-local``
    (``LocalExecutor``: the same path on this machine), with ``parameters`` (``AutoExecutor`` names:
    ``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ``cpus_per_task``, ...)."""
    submitit = import_submitit()
    if kind == "slurm":
        try:
            executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        except RuntimeError as exc:  # no srun / sbatch here
            raise ConfigError("--launcher", f"slurm: {exc} (--launcher submitit-local runs the same path on this "
                                            "machine)", "command line") from None
    elif kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder))
    else:
        raise ConfigError("--launcher", f"unknown launcher {kind!r}; valid: local, slurm, submitit-local",
                          "command line")
    executor.update_parameters(**{"timeout_min": 24 * 60, **parameters})
    return executor


def submit_runs(executor, runs: Sequence[PlannedRun], train: Callable[..., Any], *, threads: int | None = None,
                log: Callable[[str], None] = print) -> tuple[list[RunOutcome], list[tuple[int, Any]]]:
    """Submit one job per unfinished run. Returns ``(outcomes of the runs already done, [(index in runs, job)])``."""
    done, jobs = [], []
    for i, run in enumerate(runs):
        head = _describe(run, i + 1, len(runs))
        if run_status(run.run_dir) == "done":
            log(f"{head}: done earlier, skipped ({run.run_dir})")
            done.append(RunOutcome(run, "done"))
            continue
        if type(executor).__name__ == "AutoExecutor":  # the job's name in squeue (LocalExecutor has none)
            executor.update_parameters(name=f"{run.variant.name}_seed{run.seed}")
        job = executor.submit(SubmititRun(run, train, threads))
        log(f"{head}: submitted as job {job.job_id} ({' '.join(run.overrides)})")
        jobs.append((i, job))
    return done, jobs


def wait_jobs(runs: Sequence[PlannedRun], jobs: Sequence[tuple[int, Any]], *, keep_going: bool = True,
              log: Callable[[str], None] = print, after_each: Callable[[], None] | None = None) -> list[RunOutcome]:
    """Wait for the jobs of :func:`submit_runs` as they finish; a job that died (cancelled, out of requeues)
    is a failed run. Without ``keep_going`` the first failure cancels the other jobs."""
    import submitit

    by_job = {id(job): i for i, job in jobs}
    outcomes = []
    cancelled = False
    for job in submitit.helpers.as_completed([job for _, job in jobs]):
        i = by_job[id(job)]
        try:
            status, error = job.results()[0]  # task 0's (rank 0) of a job of several tasks
        except Exception as exc:  # the job itself failed: no result to read
            status, error = "failed", f"job {job.job_id}: {type(exc).__name__}: {str(exc).strip()[-500:]}"
        outcome = RunOutcome(runs[i], status, error)
        outcomes.append(outcome)
        _finished(outcome, _describe(runs[i], i + 1, len(runs)), log)
        if status == "failed" and not keep_going and not cancelled:
            cancelled = True
            for _, other in jobs:
                if not other.done():
                    other.cancel()
        if after_each is not None:
            after_each()
    return outcomes
