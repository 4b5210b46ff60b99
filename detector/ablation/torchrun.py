"""Runs of several processes each on this machine: every run is ``tools/train.py`` under ``torchrun``.

With ``nproc`` > 1 (``tools/ablate.py --nproc-per-run N``) a run is started exactly as a user starts a
data-parallel training (README, "Several GPUs or machines")::

    python -m torch.distributed.run --standalone --nproc_per_node N tools/train.py \\
        --cfg <base> --run-dir <out>/<variant>/seed<k> --no-progress --set <common> <variant> train.seed=<k>
    python -m torch.distributed.run --standalone --nproc_per_node N tools/train.py \\
        --resume <out>/<variant>/seed<k>/last.pt --no-progress        # an interrupted run

so the run folder holds what a one-process run writes (rank 0 writes it; ``results.json`` records
``world_size``). ``--standalone`` lets torchrun pick a free port, so ``jobs`` runs can start at once. With CUDA
each concurrent run gets its own ``nproc`` GPUs (``CUDA_VISIBLE_DEVICES``, :func:`gpu_groups`); on the CPU the
ranks use gloo and each gets ``OMP_NUM_THREADS`` = cores // (jobs x nproc). torchrun's output goes to
``<run_dir>/torchrun.log``; a failed run's command, exit status and log tail to ``<run_dir>/failed.txt``.
The SLURM path (one job of ``nproc`` tasks per run, no torchrun) is in :mod:`~detector.ablation.slurm`.
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence

from detector.ablation.launch import RunOutcome, _describe, collect, default_threads, skip_done
from detector.ablation.plan import PlannedRun, _in_variant, run_status
from detector.config import REPO_ROOT, config_error
from detector.errors import ConfigError

TRAIN_SCRIPT = REPO_ROOT / "tools" / "train.py"
LOG_NAME = "torchrun.log"


def torchrun_command(base: str, overrides: Sequence[str], run_dir: str | Path, nproc: int, resume: bool, *,
                     python: str = sys.executable, script: str | Path = TRAIN_SCRIPT) -> list[str]:
    """The argv that trains one run with ``nproc`` processes: a new run from ``base`` + ``overrides`` into
    ``run_dir``, or (``resume``) the continuation of ``run_dir/last.pt`` with the config stored in it.
    ``--set`` comes last: it takes every following item, one override per item (no shell quoting needed)."""
    head = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    if resume:
        return [*head, "--resume", str(Path(run_dir) / "last.pt"), "--no-progress"]
    return [*head, "--cfg", str(base), "--run-dir", str(run_dir), "--no-progress", "--set", *overrides]


def gpu_groups(gpus: Sequence[str], jobs: int, nproc: int) -> list[tuple[str, ...]]:
    """The GPUs of each of ``jobs`` concurrent runs: slot ``k`` gets ``gpus[k * nproc:(k + 1) * nproc]``; with no
    GPU every slot gets ``()`` (CPU ranks). Raises ConfigError when ``jobs * nproc`` exceeds the GPUs."""
    if not gpus:
        return [()] * jobs
    if jobs * nproc > len(gpus):
        raise ConfigError("--nproc-per-run", f"{jobs} run(s) at once x {nproc} processes need {jobs * nproc} GPUs, "
                                             f"{len(gpus)} visible ({','.join(gpus)}); lower --jobs or "
                                             "--nproc-per-run", "command line")
    return [tuple(gpus[k * nproc:(k + 1) * nproc]) for k in range(jobs)]


def cuda_gpus(runs: Sequence[PlannedRun], env: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids to share out (as ``CUDA_VISIBLE_DEVICES`` names them): none when every run has
    ``train.device: cpu...`` or there is no CUDA, else this process's visible devices."""
    if all(str(r.cfg.train.device).startswith("cpu") for r in runs):
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ if env is None else env
    named = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return named[:count] if named else [str(i) for i in range(count)]


def run_env(env: Mapping[str, str], gpus: Sequence[str], threads: int | None) -> dict[str, str]:
    """``env`` for one run's torchrun: ``CUDA_VISIBLE_DEVICES`` = its GPUs (when it has some) and
    ``OMP_NUM_THREADS`` = CPU threads per rank (when given)."""
    out = dict(env)
    if gpus:
        out["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if threads is not None:
        out["OMP_NUM_THREADS"] = str(threads)
    return out


def check_nproc(runs: Sequence[PlannedRun], nproc: int) -> None:
    """Before anything trains: every run's global batch must split into ``nproc`` slices and its device must
    be one each rank can take (``cpu``, ``auto`` or ``cuda``: ranks use ``cuda:LOCAL_RANK``).
    Raises ConfigError naming the variant and where the key was set."""
    if nproc < 1:
        raise ConfigError("--nproc-per-run", f"must be >= 1, got {nproc}", "command line")
    for run in runs:
        tc = run.cfg.train
        err = None
        if tc.batch_size % nproc:
            err = config_error(run.cfg, "train.batch_size", f"{tc.batch_size} images cannot be split over "
                               f"--nproc-per-run {nproc} processes; use a multiple of {nproc}")
        elif str(tc.device) not in ("cpu", "auto", "cuda"):
            err = config_error(run.cfg, "train.device", f"with --nproc-per-run {nproc} each rank uses "
                                                        f"cuda:LOCAL_RANK; set cuda, auto or cpu, not {tc.device!r}")
        if err is not None:
            raise _in_variant(err, run.variant, run.seed)


def train_one_torchrun(run: PlannedRun, base: str, nproc: int, gpus: Sequence[str] = (),
                       threads: int | None = None) -> tuple[str, str | None]:
    """Train, resume or skip one run through :func:`torchrun_command`; ``(status, error or None)`` as
    :func:`~detector.ablation.launch.train_one` returns them."""
    status = run_status(run.run_dir)
    if status == "done":
        return "done", None
    cmd = torchrun_command(base, run.overrides, run.run_dir, nproc, resume=status == "partial")
    run.run_dir.mkdir(parents=True, exist_ok=True)
    log_path, failed = run.run_dir / LOG_NAME, run.run_dir / "failed.txt"
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, env=run_env(os.environ, gpus, threads), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
    if rc == 0 and run_status(run.run_dir) == "done":
        failed.unlink(missing_ok=True)
        return ("resumed" if status == "partial" else "trained"), None
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    failed.write_text(f"command: {' '.join(cmd)}\nexit status: {rc}\n--- end of {log_path}:\n{tail}",
                      encoding="utf-8")
    last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "no output")
    return "failed", f"torchrun exited with status {rc}" + ("" if rc else " without results.json") + f": {last}"


def run_torchrun(runs: Sequence[PlannedRun], base: str, nproc: int, jobs: int = 1, *, threads: int | None = None,
                 keep_going: bool = True, log: Callable[[str], None] = print,
                 after_each: Callable[[], None] | None = None) -> list[RunOutcome]:
    """Train the runs, ``jobs`` at a time, each under torchrun with ``nproc`` ranks; outcomes in the order of
    ``runs``. Without ``keep_going`` the first failure cancels the runs not yet started."""
    outcomes, todo = skip_done(runs, log)
    if todo:
        gpus = cuda_gpus([runs[i] for i in todo])
        groups = gpu_groups(gpus, jobs, nproc)
        threads = threads if threads is not None else (None if gpus else default_threads(jobs * nproc))
        log(f"{len(todo)} run(s), {jobs} at a time, each torchrun with {nproc} processes"
            + (f" on GPUs {' | '.join(','.join(g) for g in groups)}" if gpus else f", {threads} CPU thread(s) each"))
        slots: queue.Queue = queue.Queue()
        for group in groups:
            slots.put(group)

        def one(i: int) -> tuple[str, str | None]:
            run, group = runs[i], slots.get()
            verb = "resuming" if run_status(run.run_dir) == "partial" else "training"
            log(f"{_describe(run, i + 1, len(runs))}: {verb} in {run.run_dir}"
                + (f" on GPUs {','.join(group)}" if group else "") + f"  ({' '.join(run.overrides)})")
            try:
                return train_one_torchrun(run, base, nproc, group, threads)
            finally:
                slots.put(group)

        with ThreadPoolExecutor(jobs) as pool:
            collect({pool.submit(one, i): i for i in todo}, runs, outcomes, keep_going, log, after_each)
    return [outcomes[i] for i in sorted(outcomes)]
