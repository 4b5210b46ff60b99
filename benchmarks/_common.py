"""What every benchmark script shares: the command line it starts from, the device's name, the date, a table on
stdout and a JSON file, and a training step set up as ``detector.engine.trainer.fit`` sets it up.

A result is a list of rows; a row is a flat dict whose first keys are ``figure``, ``configuration``, ``device`` and
``date`` (:data:`ROW_KEYS`), followed by the measured values. ``report`` prints the rows as a markdown table and,
with ``--json PATH``, writes ``{"script", "command", "torch", "threads", "rows"}`` there.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = ("figure", "configuration", "device", "date")


def base_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes: --device, --threads, --set, --json, --smoke,
    --malloc."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON to PATH")
    p.add_argument("--smoke", action="store_true", help="a seconds-long run of the same code (CI): figures meaningless")
    add_malloc_option(p)
    return p


def add_malloc_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="CPU: keep freed memory in the process as a CPU training run does (train.keep_freed_memory, "
                        "detector/engine/allocator.py), or glibc's defaults (default: keep)")


def apply_malloc(args: argparse.Namespace, device: torch.device) -> None:
    """--malloc keep on a CPU run: glibc keeps freed memory for the rest of this process (as ``fit`` does)."""
    from detector.engine.allocator import NEVER_TRIM, set_malloc

    if args.malloc == "keep" and device.type == "cpu":
        set_malloc(0, NEVER_TRIM)


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and seed torch; return the device of --device (checked to exist)."""
    from detector.engine.trainer import select_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = select_device(args.device)
    apply_malloc(args, device)
    return device


def device_name(device: torch.device) -> str:
    """'NVIDIA H200' for a GPU; the processor's model name and torch's thread count for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def today() -> str:
    """The local date and time to the minute, ISO format: '2026-12-05 14:03'."""
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def row(figure: str, configuration: str, device: torch.device | str, **values) -> dict:
    """A result row: the four :data:`ROW_KEYS` (device named by :func:`device_name`, date now), then ``values``."""
    name = device if isinstance(device, str) else device_name(device)
    return {"figure": figure, "configuration": configuration, "device": name, "date": today(), **values}


def format_cell(value) -> str:
    """A table cell: floats with 4 significant digits (thousands separated), NaN / None as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{max(0, 3 - int(math.floor(math.log10(abs(value)))))}f}" if value else "0"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    """Rows (dicts) -> a markdown table over the union of their keys, in first-seen order; missing cells '-'."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" if k in ROW_KEYS else "---:" for k in keys) + "|"]
    lines += ["| " + " | ".join(format_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def report(rows: list[dict], json_path: str | None, argv: list[str] | None, script: str) -> None:
    """Print ``rows`` as a markdown table; with ``json_path``, write them there (:func:`write_json`)."""
    print(markdown_table(rows), flush=True)
    if json_path is not None:
        write_json(rows, json_path, argv, script)


def write_json(rows: list[dict], json_path: str, argv: list[str] | None, script: str) -> None:
    """Write ``{"script", "command", "torch", "threads", "rows"}`` to ``json_path``.

    ``argv``: the arguments of an in-process call (None: the command line's); ``script``: the caller's ``__file__``."""
    args = sys.argv[1:] if argv is None else argv
    record = {"script": Path(script).name, "command": " ".join(["python", f"benchmarks/{Path(script).name}", *args]),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class Take:
    """The next ``n`` items of a shared iterator, with a length: a 'loader' of ``n`` batches for ``train_one_epoch``.

    Successive ``Take``s over one iterator continue where the previous one stopped (warm-up, then timed steps)."""

    def __init__(self, source: Iterator, n: int):
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator:
        return islice(self.source, self.n)


@dataclass
class StepParts:
    """What ``train_one_epoch`` needs besides the loader, built as ``fit`` builds it (no checkpoint, no logging)."""

    kwargs: dict
    amp_dtype: torch.dtype | None
    channels_last: bool


def step_parts(cfg, parts, device: torch.device, batches_per_epoch: int) -> StepParts:
    """The optimizer, scaler, EMA, LR schedule, accumulation, clipping, AMP and channels_last of ``fit`` for ``cfg``.

    ``parts`` is ``detector.build.build_all(cfg, device)``; its model is converted to channels_last here when the
    config asks for it on this device. Mirrors ``fit``'s policy (``detector.engine.precision``)."""
    from detector.engine.ema import ModelEMA
    from detector.engine.precision import precision, training_model
    from detector.engine.optim import (LRSchedule, accumulate_steps, build_optimizer, scaled_weight_decay,
                                       warmup_iterations)

    tc = cfg.train
    amp_dtype, channels_last = precision(tc, device)
    model = parts.model.to(memory_format=torch.channels_last) if channels_last else parts.model
    accumulate = accumulate_steps(tc.batch_size, tc.nbs)
    decay = scaled_weight_decay(tc.weight_decay, tc.batch_size, accumulate, tc.nbs)
    optimizer = build_optimizer(model, tc.optimizer, lr=tc.lr0, momentum=tc.momentum, weight_decay=decay,
                                nesterov=tc.nesterov)
    schedule = LRSchedule(epochs=tc.epochs, lrf=tc.lrf, schedule=tc.schedule,
                          warmup_iters=warmup_iterations(tc.warmup_epochs, batches_per_epoch),
                          warmup_bias_lr=tc.warmup_bias_lr, warmup_momentum=tc.warmup_momentum, momentum=tc.momentum)
    kwargs = dict(model=training_model(model, tc), criterion=parts.criterion, optimizer=optimizer,
                  scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
                  ema=ModelEMA(model, decay=tc.ema_decay, tau=tc.ema_tau) if tc.ema else None, device=device,
                  schedule=schedule, accumulate=accumulate, grad_clip=tc.grad_clip, amp_dtype=amp_dtype,
                  channels_last=channels_last, progress=False)
    return StepParts(kwargs, amp_dtype, channels_last)


def precision_flags(sp: StepParts) -> str:
    """``"autocast bfloat16, channels_last, compiled"``: what the step runs with, for a benchmark's configuration
    column."""
    dtype = f"autocast {str(sp.amp_dtype).removeprefix('torch.')}" if sp.amp_dtype is not None else ""
    compiled = "compiled" if hasattr(sp.kwargs["model"], "_orig_mod") else ""
    return ", ".join(f for f in (dtype, "channels_last" if sp.channels_last else "", compiled) if f)


def run_epoch(sp: StepParts, loader, epoch: int) -> dict[str, float]:
    """``train_one_epoch`` over ``loader`` with the parts of :func:`step_parts`; returns its loss means."""
    from detector.engine.epoch import train_one_epoch

    return train_one_epoch(loader=loader, epoch=epoch, **sp.kwargs)
