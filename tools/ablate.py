#!/usr/bin/env python
"""Train a base config under several variants and seeds, then compare them with COCO mAP.

    python tools/ablate.py --spec configs/ablations/box_losses.yaml            # variants from a YAML file
    python tools/ablate.py --spec configs/ablations/box_losses.yaml --seeds 0 --set train.epochs=10
    python tools/ablate.py --cfg yolov5_ciou --vary loss.box=ciou,giou,diou --set train.epochs=10 \\
        --seeds 0 1 --out runs/ablate/box
    python tools/ablate.py --cfg yolov5_ciou --vary "loss.box=ciou,{name: focal_eiou, gamma: 0.5}"
    python tools/ablate.py --spec configs/ablations/box_losses.yaml --summary-only   # table of finished runs
    python tools/ablate.py --spec configs/ablations/box_losses.yaml --jobs 4          # 4 runs at once
    python tools/ablate.py --spec configs/ablations/box_losses.yaml --launcher slurm \\
        --slurm slurm_partition=gpu gpus_per_node=1 cpus_per_task=8 timeout_min=720  # one SLURM job per run
    python tools/ablate.py --spec configs/ablations/box_losses.yaml --nproc-per-run 4   # each run on 4 GPUs (torchrun)
    python tools/ablate.py --spec configs/ablations/box_losses.yaml --nproc-per-run 4 --launcher slurm \\
        --slurm slurm_partition=gpu cpus_per_task=8   # one job of 4 tasks and 4 GPUs per run

Every run's config is validated before the first one trains. Runs land in OUT/<variant>/seed<k>/; running
the same command again skips finished runs and resumes interrupted ones. The table goes to stdout and to
OUT/summary.md (+ summary.csv, paired.csv, runs.csv, and map_curves.png / loss_curves.png when matplotlib is
installed, map_ci.png, hparams/ for TensorBoard, errors.csv); summary.md compares every variant with the
baseline seed by seed (95% t-interval, Holm-corrected verdict) and breaks each variant's errors down (TIDE).
Exit status: 0 all runs finished, 1 some run failed, 2 bad spec or config.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.ablation import ablate, load_spec, spec_from_vary, with_cli_overrides  # noqa: E402
from detector.errors import ConfigError, DatasetError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", help="ablation YAML (base, set, seeds, variants, out)")
    p.add_argument("--cfg", help="base training config (path or bare name in configs/), with --vary")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one variant per value (repeat for a grid); values may be YAML, e.g. {name: focal, gamma: 2}")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides common to every run (after the spec's `set:`)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="train.seed values (default: the spec's, or 0)")
    p.add_argument("--baseline", metavar="VARIANT",
                   help="variant the others are compared with (default: the spec's `baseline:`, or the first)")
    p.add_argument("--out", help="output folder (default: the spec's `out:`, or runs/ablate/<name>)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="R",
                   help="R resamples of the evaluation images for a CI of each variant's mAP gap from the saved "
                        "detections (e.g. 200; pycocotools runs 2 x R x seeds times per variant; default 0: off)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at once in separate processes (one GPU each when there are several, else "
                        "the CPU cores split between them; default 1: in this process)")
    p.add_argument("--threads", type=int, metavar="T",
                   help="CPU threads per run process (per rank with --nproc-per-run) with --jobs > 1, --nproc-per-run "
                        "or a submitit launcher (default: cores // processes)")
    p.add_argument("--nproc-per-run", type=int, default=1, metavar="N",
                   help="train each run data-parallel over N processes (train.batch_size is the global batch): "
                        "locally `torchrun --standalone --nproc_per_node N tools/train.py`, N GPUs per run with CUDA "
                        "(--jobs J needs J x N), gloo ranks on the CPU; under --launcher slurm one job of N tasks "
                        "(and N GPUs) on one node per run (default 1)")
    p.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="slurm: one SLURM job per run through submitit (preempted jobs are requeued and resume "
                        "from last.pt); submitit-local: the same path on this machine (default: local)")
    p.add_argument("--slurm", nargs="*", default=[], metavar="KEY=VALUE",
                   help="submitit executor parameters, e.g. slurm_partition=gpu timeout_min=720 gpus_per_node=1")
    p.add_argument("--summary-only", action="store_true", help="train nothing; summarise the finished runs")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed run (default: go on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay readable in CI)")
    args = p.parse_args(argv)
    if bool(args.spec) == bool(args.cfg):
        p.error("give either --spec FILE, or --cfg CONFIG with --vary KEY=V1,V2,...")
    if args.cfg and not args.vary:
        p.error("--cfg needs at least one --vary KEY=V1,V2,...")
    if args.spec and args.vary:
        p.error("--vary goes with --cfg; with --spec, list the variants in the file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.spec:
            spec = with_cli_overrides(load_spec(args.spec), args.set, args.seeds, args.out, args.baseline)
        else:
            spec = spec_from_vary(args.cfg, args.vary, args.set, args.seeds or (0,), args.out, args.baseline)
        params = {}
        if args.slurm:
            from detector.ablation.slurm import parse_parameters

            params = parse_parameters(args.slurm)
        report = ablate(spec, progress=not args.no_progress, keep_going=not args.fail_fast,
                        summary_only=args.summary_only, bootstrap=args.bootstrap, jobs=args.jobs,
                        threads=args.threads, launcher=args.launcher, launcher_params=params,
                        nproc=args.nproc_per_run)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report.failed:
        print(f"{len(report.failed)} run(s) failed: "
              + ", ".join(f"{o.run.variant.name} seed {o.run.seed}" for o in report.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
