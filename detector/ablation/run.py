"""Running: train the planned runs in order (skip finished, resume interrupted, record failures), and
:func:`ablate`, the whole ablation from spec to summary."""
from __future__ import annotations

import gc
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from detector.ablation.plan import PlannedRun, check_existing_runs, plan_record, plan_runs, run_status
from detector.ablation.report import display_path, write_summary
from detector.ablation.results import VariantRow
from detector.ablation.spec import AblationSpec, default_out_dir
from detector.ablation.stats import PairedComparison


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one planned run: ``status`` is done (already finished), trained, resumed or failed."""

    run: PlannedRun
    status: str
    error: str | None = None


def run_all(runs: Sequence[PlannedRun], train: Callable[..., dict], *, progress: bool = True,
            keep_going: bool = True, log: Callable[[str], None] = print,
            after_each: Callable[[], None] | None = None) -> list[RunOutcome]:
    """Train the runs in order with ``train`` (``detector.engine.trainer.fit``'s signature).

    A run with ``results.json`` is skipped; one with ``last.pt`` is resumed with ``train(cfg, resume=...)``;
    otherwise ``train(cfg, run_dir=..., progress=...)``. A run that raises is recorded in
    ``<run_dir>/failed.txt`` (traceback) and, with ``keep_going``, the next run starts; the ablation then
    reports it. ``after_each()`` runs after every trained run (e.g. to refresh the summary).
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
        failed = run.run_dir / "failed.txt"
        try:
            if status == "partial":
                train(run.cfg, resume=run.run_dir / "last.pt", progress=progress)
            else:
                train(run.cfg, run_dir=run.run_dir, progress=progress)
        except Exception as exc:  # one diverging variant must not cost the others; KeyboardInterrupt stops
            run.run_dir.mkdir(parents=True, exist_ok=True)
            failed.write_text(traceback.format_exc(), encoding="utf-8")
            message = f"{type(exc).__name__}: {exc}"
            log(f"{head}: FAILED: {message} (traceback in {failed})")
            outcomes.append(RunOutcome(run, "failed", message))
            if not keep_going:
                break
        else:
            if failed.exists():
                failed.unlink()
            outcomes.append(RunOutcome(run, "resumed" if status == "partial" else "trained"))
        finally:
            _release_memory()
        if after_each is not None:
            after_each()
    return outcomes


def _release_memory() -> None:
    """Free what the finished run left behind (cyclic garbage, cached CUDA blocks) before the next one."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


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
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ablation.json").write_text(json.dumps(plan_record(spec, runs), indent=2) + "\n",
                                              encoding="utf-8")
        if train is None:
            from detector.engine.trainer import fit as train
        outcomes = run_all(runs, train, progress=progress, keep_going=keep_going, log=log,
                           after_each=lambda: write_summary(spec, runs, out_dir, plots=False, log=log))
    rows, paired, markdown, files = write_summary(spec, runs, out_dir, bootstrap=bootstrap, log=log)
    log(markdown)
    log(f"Summary written to {files[0]} ({', '.join(f.name for f in files[1:])})")
    return AblationReport(outcomes, rows, markdown, files, paired)
