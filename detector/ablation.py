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
    out: runs/ablate/box               # optional; relative to the current directory

or on the command line (``tools/ablate.py --cfg yolov5_ciou --vary loss.box=ciou,giou --seeds 0 1``).

The run of variant ``v`` with seed ``k`` uses the overrides ``set + variants[v] + [train.seed=k]`` (later
items win, as with ``tools/train.py --set``). Every run's config is loaded and validated before anything
trains (:func:`plan_runs`), so a typo in the fifth variant fails at once, naming the variant.

Output folder::

    out/ablation.json            the plan: base file, common overrides, seeds, variants, each run's overrides
    out/<variant>/seed<k>/       one ``fit()`` run directory (config.yaml, last.pt, history.jsonl, results.json)
    out/summary.md, summary.csv  one row per variant: mAP mean +- std over seeds, delta vs the first variant
    out/runs.csv                 one row per finished run: the 12 COCO stats, final loss terms, time
    out/map_curves.png, out/loss_curves.png   (when matplotlib is installed)

Runs go seed-major (every variant with the first seed, then every variant with the second seed, ...), so an
interrupted ablation already holds a comparable table. Running the same ablation again skips finished runs
(``results.json`` present) and resumes interrupted ones (``last.pt`` present) with ``fit(resume=...)``; a run
folder that holds a different config than planned is reported before anything trains, never mixed in.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import gc
import io
import itertools
import json
import math
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from detector.config import (
    CONFIG_DIR,
    Config,
    config_error,
    config_from_dict,
    config_to_dict,
    load_config,
    read_yaml_file,
    resolve_config_path,
    resolve_dataset,
)
from detector.errors import ConfigError

SPEC_KEYS = ("base", "set", "seeds", "variants", "out")
"""The keys an ablation YAML file may hold."""
SUMMARY_METRICS = (("mAP", "mAP50-95"), ("mAP50", "mAP50"), ("mAP75", "mAP75"))
"""COCO stats of the summary table: (key in results.json ``stats``, column title)."""
DELTA_METRICS = ("mAP", "mAP50")
"""Stats whose difference to the first variant gets a column."""
IGNORED_CONFIG_KEYS = frozenset({"data.workers", "train.out_dir", "train.name"})
"""Config keys that may differ between a planned run and the run folder it finds (they do not change results)."""
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


# --------------------------------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One arm of the ablation.

    Attributes:
        name: folder name and table label (letters, digits, ``._+=-``; e.g. ``giou``).
        overrides: ``key=value`` items applied after the common ones (may be empty: the base as is).
        origin: where it was defined, for errors (``box_losses.yaml:12`` or ``--vary loss.box=...``).
    """

    name: str
    overrides: tuple[str, ...]
    origin: str


@dataclass(frozen=True)
class AblationSpec:
    """What to train.

    Attributes:
        base: the base training config: an absolute path (resolved when the spec was read).
        common: overrides applied to every run, before the variant's.
        variants: the arms, in table order (the first is the reference of the delta columns).
        seeds: ``train.seed`` values; every variant runs once per seed.
        out: the output folder (relative to the current directory), or None (the caller chooses).
        source: the spec file, or ``"command line"``.
    """

    base: str
    common: tuple[str, ...]
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    out: str | None
    source: str


def override_key(item: str) -> str:
    """``"loss.box={name: focal_eiou}"`` -> ``"loss.box"`` (the text before the first ``=``, stripped)."""
    return item.partition("=")[0].strip()


def _check_overrides(items: Any, what: str, file: str, line: int | None) -> tuple[str, ...]:
    """A list of ``key=value`` strings (a single string is a one-item list; null is empty).

    ``train.seed`` is refused: seeds come from ``seeds:`` / ``--seeds``.
    """
    if items is None:
        return ()
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        raise ConfigError(what, f"expected a list of key=value overrides (e.g. [loss.box=giou]), got "
                                f"{type(items).__name__} {items!r}", file, line)
    out = []
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            hint = (" (write `- loss.box=giou`, not `- loss.box: giou`; quote values holding ': ', e.g. "
                    "\"loss.box={name: focal_eiou, gamma: 0.5}\")") if isinstance(item, dict) else ""
            raise ConfigError(what, f"expected key=value, got {type(item).__name__} {item!r}{hint}", file, line)
        if override_key(item) == "train.seed":
            raise ConfigError(what, f"{item!r}: seeds are set by `seeds:` (--seeds on the command line), "
                                    f"not by overrides", file, line)
        out.append(item)
    return tuple(out)


def _check_seeds(seeds: Any, file: str, line: int | None) -> tuple[int, ...]:
    """Distinct non-negative ints (a single int is a one-item list)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError("seeds", f"expected a non-empty list of integers >= 0 (e.g. [0, 1]), got {seeds!r}",
                          file, line)
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"{seeds} repeats a seed", file, line)
    return tuple(seeds)


def check_variant_name(name: Any, file: str | None = None, line: int | None = None) -> str:
    """Return ``name`` if it can be a folder name and table label, else raise ConfigError."""
    if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
        raise ConfigError("variants", f"variant name {name!r} must start with a letter or digit and hold only "
                                      f"letters, digits and . _ + = - (it names the run folder)", file, line)
    return name


def _check_unique(variants: Sequence[Variant], file: str | None) -> None:
    seen: dict[str, Variant] = {}
    for v in variants:
        if v.name in seen:
            raise ConfigError("variants", f"two variants are named {v.name!r} ({seen[v.name].origin} and "
                                          f"{v.origin}); give them different names", file)
        seen[v.name] = v


def load_spec(path: str | Path) -> AblationSpec:
    """Read an ablation YAML file (see the module docstring) into an :class:`AblationSpec`.

    ``base`` is resolved relative to the file's folder, then as a bare name in ``configs/``; ``seeds``
    defaults to ``[0]``; ``out`` stays as written (relative to the current directory) or None.
    Only the spec's own shape is checked here; :func:`plan_runs` validates the training configs.

    Raises:
        ConfigError: naming the file, line and key (unknown key, missing base/variants, bad overrides,
            bad seeds, bad or repeated variant names, base file not found).
    """
    path = Path(path)
    file = str(path)
    data, sources = read_yaml_file(path, "ablation spec")

    def line(*key: str | int) -> int | None:
        return sources.get(tuple(key), (None, None))[1]

    if not isinstance(data, dict):
        raise ConfigError("", f"an ablation spec must be a mapping with keys {', '.join(SPEC_KEYS)}", file, 1)
    for key in data:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(key, SPEC_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(SPEC_KEYS)}"
            raise ConfigError(key, f"unknown key of an ablation spec; {hint}", file, line(key))
    for key in ("base", "variants"):
        if key not in data:
            raise ConfigError(key, "missing; an ablation spec needs `base:` (a training config) and `variants:` "
                                   "(name: [key=value, ...])", file)
    base = data["base"]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError("base", f"expected a config file name, got {base!r}", file, line("base"))
    base_path = resolve_config_path(base, [path.parent, CONFIG_DIR], (file, line("base")), "base", CONFIG_DIR)
    common = _check_overrides(data.get("set"), "set", file, line("set"))
    seeds = _check_seeds(data.get("seeds", [0]), file, line("seeds"))
    raw_variants = data["variants"]
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise ConfigError("variants", "expected a non-empty mapping name: [key=value, ...], e.g. "
                                      "{ciou: [loss.box=ciou], giou: [loss.box=giou]}", file, line("variants"))
    variants = []
    for name, items in raw_variants.items():
        at = line("variants", name)
        check_variant_name(name, file, at)
        overrides = _check_overrides(items, f"variants.{name}", file, at)
        variants.append(Variant(name, overrides, f"{file}:{at}" if at else file))
    out = data.get("out")
    if out is not None and (not isinstance(out, str) or not out.strip()):
        raise ConfigError("out", f"expected a folder path, got {out!r}", file, line("out"))
    return AblationSpec(str(base_path), common, tuple(variants), seeds, out, file)


def split_values(text: str) -> list[str]:
    """Split ``--vary`` values on the commas outside brackets and quotes.

    ``"ciou,giou,{name: focal_eiou, gamma: 0.5}"`` -> ``["ciou", "giou", "{name: focal_eiou, gamma: 0.5}"]``.
    Raises ValueError on an empty item or unbalanced brackets.
    """
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {ch!r} in {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth or quote:
        raise ValueError(f"unclosed bracket or quote in {text!r}")
    items.append(text[start:].strip())
    if not all(items):
        raise ValueError(f"empty value in {text!r}; separate values with single commas")
    return items


def value_name(value: str) -> str:
    """A folder-safe variant name for an override value.

    ``"giou"`` -> ``"giou"``; ``"{name: focal_eiou, gamma: 0.5}"`` -> ``"focal_eiou_gamma0.5"`` (a loss
    mapping: its name, then each parameter and value); ``"[8, 16, 32]"`` -> ``"8_16_32"``.
    """
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, dict) and "name" in parsed:
        text = "_".join([str(parsed["name"])] + [f"{k}{v}" for k, v in parsed.items() if k != "name"])
    else:
        text = value
    name = re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_.")
    return name or "value"


def spec_from_vary(base: str, vary: Sequence[str], common: Sequence[str] = (), seeds: Sequence[int] = (0,),
                   out: str | None = None) -> AblationSpec:
    """The spec of ``tools/ablate.py --cfg BASE --vary KEY=V1,V2,...`` (one variant per value).

    Several ``vary`` items give the full grid, named by joining the value names with ``+``
    (``--vary loss.box=ciou,giou --vary loss.cls=bce,focal`` -> ``ciou+bce``, ``ciou+focal``, ...).
    ``base`` is resolved as :func:`~detector.config.load_config` does (current directory, then configs/).

    Raises:
        ConfigError: naming the ``--vary`` item (no ``=``, bad value list, train.seed), bad seeds,
            repeated variant names, or a base config not found.
    """
    if not vary:
        raise ConfigError("", "give at least one --vary KEY=V1,V2,...", "command line")
    base_path = resolve_config_path(base, [Path.cwd(), CONFIG_DIR], ("--cfg", None), "", CONFIG_DIR)
    axes = []
    for item in vary:
        key, sep, values = item.partition("=")
        key = key.strip()
        origin = f"--vary {item}"
        if not sep or not key:
            raise ConfigError("", "expected KEY=V1,V2,..., e.g. loss.box=ciou,giou,diou", origin)
        if key == "train.seed":
            raise ConfigError("", "vary seeds with --seeds, not --vary train.seed", origin)
        try:
            split = split_values(values)
        except ValueError as exc:
            raise ConfigError(key, str(exc), origin) from None
        axes.append([(value_name(v), f"{key}={v}", origin) for v in split])
    variants = []
    for combo in itertools.product(*axes):
        name = "+".join(n for n, _, _ in combo)
        variants.append(Variant(check_variant_name(name, "--vary"), tuple(o for _, o, _ in combo),
                                " ".join(dict.fromkeys(org for _, _, org in combo))))
    _check_unique(variants, "command line")
    return AblationSpec(str(base_path), _check_overrides(list(common), "--set", "command line", None),
                        tuple(variants), _check_seeds(list(seeds), "--seeds", None), out, "command line")


def with_cli_overrides(spec: AblationSpec, common: Sequence[str] = (), seeds: Sequence[int] | None = None,
                       out: str | None = None) -> AblationSpec:
    """``spec`` with ``--set`` items appended to its common overrides, and ``--seeds`` / ``--out`` replacing."""
    return dataclasses.replace(
        spec,
        common=spec.common + _check_overrides(list(common), "--set", "command line", None),
        seeds=_check_seeds(list(seeds), "--seeds", None) if seeds else spec.seeds,
        out=out if out is not None else spec.out,
    )


def default_out_dir(spec: AblationSpec) -> Path:
    """``runs/ablate/<spec file stem>``, or ``runs/ablate/<base stem>_<varied keys>`` for a command-line spec."""
    if spec.source != "command line":
        return Path("runs/ablate") / Path(spec.source).stem
    keys = dict.fromkeys(override_key(o) for v in spec.variants for o in v.overrides)
    return Path("runs/ablate") / "_".join([Path(spec.base).stem, *keys])


# --------------------------------------------------------------------------------------------------
# planning and up-front validation
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) training run.

    Attributes:
        variant: the arm.
        seed: its ``train.seed``.
        overrides: every override applied to the base, in order (common, variant, ``train.seed=<seed>``).
        cfg: the validated config.
        run_dir: ``out/<variant>/seed<seed>``.
    """

    variant: Variant
    seed: int
    overrides: tuple[str, ...]
    cfg: Config
    run_dir: Path


def _in_variant(err: ConfigError, variant: Variant, seed: int) -> ConfigError:
    """``err`` with its message prefixed by the variant (and where the variant was defined)."""
    new = ConfigError(err.key, err.detail, err.file, err.line)
    new.args = (f"variant {variant.name!r} (seed {seed}; defined at {variant.origin}): {err}",)
    return new


def validate_config(cfg: Config) -> None:
    """Checks beyond the schema that need no data or model: loss names and parameters, the assigner, and
    that the dataset file exists. Raises ConfigError located where ``cfg`` set the key."""
    from detector import build

    try:
        build.build_criterion(cfg, num_classes=1)  # parses loss.box/cls/obj specs and builds the assigner
    except ConfigError as err:
        if err.file is None and err.key:
            raise config_error(cfg, err.key, err.detail) from None
        raise
    resolve_dataset(cfg)


def plan_runs(spec: AblationSpec, out_dir: str | Path,
              validate: Callable[[Config], None] = validate_config) -> list[PlannedRun]:
    """Load and validate the config of every (variant, seed), seed-major; nothing is trained or written.

    Raises:
        ConfigError: the first invalid run config, its message starting with ``variant '<name>'``.
    """
    out_dir = Path(out_dir)
    runs = []
    for seed in spec.seeds:
        for variant in spec.variants:
            overrides = (*spec.common, *variant.overrides, f"train.seed={seed}")
            try:
                cfg = load_config(spec.base, overrides)
                validate(cfg)
            except ConfigError as err:
                raise _in_variant(err, variant, seed) from None
            runs.append(PlannedRun(variant, seed, overrides, cfg, out_dir / variant.name / f"seed{seed}"))
    return runs


def run_status(run_dir: str | Path) -> str:
    """``"done"`` (results.json exists), ``"partial"`` (last.pt without results.json) or ``"new"``."""
    run_dir = Path(run_dir)
    if (run_dir / "results.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "partial"
    return "new"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"train.epochs": 30, "loss.box": "ciou", ...}`` (lists and scalars are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(planned: dict, found: dict, ignore: Iterable[str] = IGNORED_CONFIG_KEYS) -> list[str]:
    """The keys where two config dicts (:func:`~detector.config.config_to_dict` form) differ.

    Returns lines ``"train.epochs: 30 in the run folder, 60 planned"``, in ``planned``'s key order then
    keys only ``found`` has; keys in ``ignore`` (and below them) are skipped.
    """
    a, b = flatten(planned), flatten(found)
    ignore = tuple(ignore)
    lines = []
    for key in dict.fromkeys([*a, *b]):
        if any(key == i or key.startswith(i + ".") for i in ignore):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {b.get(key, '<absent>')!r} in the run folder, {a.get(key, '<absent>')!r} planned")
    return lines


def check_existing_runs(runs: Sequence[PlannedRun]) -> None:
    """Refuse to skip or resume a run folder that holds a different config than planned.

    Compares each started run's ``config.yaml`` (written by ``fit``) with the planned config.

    Raises:
        ConfigError: naming every mismatching folder and the first differing keys.
    """
    problems = []
    for run in runs:
        if run_status(run.run_dir) == "new":
            continue
        path = run.run_dir / "config.yaml"
        try:
            found = config_to_dict(config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), str(path)))
            diffs = config_differences(config_to_dict(run.cfg), found)
        except (OSError, yaml.YAMLError, ConfigError) as exc:
            diffs = [f"cannot read its config.yaml ({exc})"]
        if diffs:
            shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
            problems.append(f"{run.run_dir} (variant {run.variant.name!r}, seed {run.seed}): {shown}")
    if problems:
        raise ConfigError("", "run folders hold runs of other configs than this ablation plans; delete them or "
                              "choose another --out:\n  " + "\n  ".join(problems), "ablation")


def plan_record(spec: AblationSpec, runs: Sequence[PlannedRun]) -> dict:
    """The plan as JSON-ready data: spec fields and each run's variant, seed, overrides and folder."""
    return {
        "source": spec.source,
        "base": spec.base,
        "common": list(spec.common),
        "seeds": list(spec.seeds),
        "variants": {v.name: list(v.overrides) for v in spec.variants},
        "runs": [{"variant": r.variant.name, "seed": r.seed, "overrides": list(r.overrides),
                  "run_dir": str(r.run_dir)} for r in runs],
    }


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# results and aggregation (pure functions of the numbers)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """A finished run's numbers.

    Attributes:
        variant, seed: which run.
        stats: the 12 COCO stats of its final evaluation (``results.json`` ``stats``).
        losses: the mean loss terms of its last epoch (``lbox``, ``lobj``, ``lcls``, ...).
        train_time_s: training time in seconds (accumulated over resumes).
        history: the ``history.jsonl`` records, one per epoch.
    """

    variant: str
    seed: int
    stats: dict[str, float]
    losses: dict[str, float]
    train_time_s: float
    history: list[dict]


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
                     float(data.get("train_time_s", 0.0)), history)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator); std is None for fewer than 2 values.

    Raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class VariantRow:
    """One row of the summary table.

    Attributes:
        name, overrides: the variant.
        seeds: seeds with a finished run; planned: how many seeds were planned.
        metrics: COCO stat key -> (mean, sample std or None) over the finished seeds (empty when none).
        deltas: key of :data:`DELTA_METRICS` -> mean minus the first variant's mean (None for the first
            row or when either has no finished run).
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


def summarize(variants: Sequence[Variant], results: Sequence[RunResult], planned_seeds: int) -> list[VariantRow]:
    """Aggregate per-run results into one :class:`VariantRow` per variant, in the order of ``variants``."""
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
    ref = rows[0] if rows else None
    out = []
    for i, row in enumerate(rows):
        deltas = {}
        for key in DELTA_METRICS:
            ok = i > 0 and key in row.metrics and key in ref.metrics
            deltas[key] = row.metrics[key][0] - ref.metrics[key][0] if ok else None
        out.append(dataclasses.replace(row, deltas=deltas))
    return out


def format_mean_std(value: tuple[float, float | None] | None, digits: int = 4) -> str:
    """``(0.32, 0.0283)`` -> ``"0.3200 ± 0.0283"``; ``(0.32, None)`` -> ``"0.3200"``; None -> ``"–"``."""
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_duration(seconds: float | None) -> str:
    """``4.25`` -> ``"4.2 s"``, ``42.0`` -> ``"42 s"``, ``150`` -> ``"2.5 min"``, ``5400`` -> ``"1.50 h"``, None -> ``"–"``."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def loss_terms(rows: Sequence[VariantRow]) -> list[str]:
    """Every loss term of any row, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r.losses))


def format_markdown_table(rows: Sequence[VariantRow]) -> str:
    """The summary as a markdown table: variant, overrides, mAP50-95 / mAP50 (mean ± std) with their delta
    to the first row, mAP75, the last-epoch loss terms, training time per run, finished/planned seeds."""
    terms = loss_terms(rows)
    ref = rows[0].name if rows else ""
    head = ["variant", "overrides"]
    for key, title in SUMMARY_METRICS:
        head.append(title)
        if key in DELTA_METRICS:
            head.append(f"Δ {title}")
    head += terms + ["train time / run", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for i, r in enumerate(rows):
        cells = [f"**{r.name}**" if i == 0 else r.name,
                 " ".join(f"`{_md_cell(o)}`" for o in r.overrides) or "(base)"]
        for key, _ in SUMMARY_METRICS:
            cells.append(format_mean_std(r.metrics.get(key)))
            if key in DELTA_METRICS:
                d = r.deltas.get(key)
                cells.append(f"ref ({ref})" if i == 0 else ("–" if d is None else f"{d:+.4f}"))
        cells += [f"{r.losses[t]:.4f}" if t in r.losses else "–" for t in terms]
        cells.append(format_duration(r.train_time_s))
        n = len(r.seeds)
        cells.append(str(n) if n == r.planned else f"{n}/{r.planned}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(spec: AblationSpec, rows: Sequence[VariantRow], dataset: str, split: str,
                    notes: Sequence[str] = ()) -> str:
    """The whole ``summary.md``: what was compared (base config, common overrides, seeds, metric), the table,
    then ``notes`` (missing or failed runs)."""
    common = " ".join(f"`{o}`" for o in spec.common) or "none"
    std_note = ("mean ± sample standard deviation (n − 1) over seeds" if len(spec.seeds) > 1
                else "one seed, so no standard deviation")
    lines = [
        f"# Ablation ({spec.source})",
        "",
        f"- base config: `{_display_path(spec.base)}`",
        f"- common overrides: {common}",
        f"- seeds: {', '.join(str(s) for s in spec.seeds)} (`train.seed`)",
        f"- metric: COCO bbox mAP (pycocotools) of each run's final evaluation on split `{split}` of "
        f"`{dataset}`; {std_note}; Δ = difference of the means to the first variant.",
        "- loss columns: mean loss term of the last training epoch (the terms of different losses are on "
        "different scales: compare a loss across variants only where it is the same function); time: "
        "training time per run.",
        "",
        format_markdown_table(rows),
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def format_summary_csv(rows: Sequence[VariantRow]) -> str:
    """One CSV line per variant at full precision; empty cells where a value is missing."""
    terms = loss_terms(rows)
    head = ["variant", "overrides", "seeds_done", "seeds_planned"]
    for key, _ in SUMMARY_METRICS:
        head += [f"{key}_mean", f"{key}_std"]
    head += [f"delta_{k}" for k in DELTA_METRICS] + terms + ["train_time_s"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        line: list[Any] = [r.name, " ".join(r.overrides), len(r.seeds), r.planned]
        for key, _ in SUMMARY_METRICS:
            mean, std = r.metrics.get(key, (None, None))
            line += [_csv(mean), _csv(std)]
        line += [_csv(r.deltas.get(k)) for k in DELTA_METRICS]
        line += [_csv(r.losses.get(t)) for t in terms]
        line.append(_csv(r.train_time_s))
        w.writerow(line)
    return buf.getvalue()


def format_runs_csv(results: Sequence[RunResult]) -> str:
    """One CSV line per finished run: variant, seed, every COCO stat, every loss term, training time."""
    stats = list(dict.fromkeys(k for r in results for k in r.stats))
    terms = list(dict.fromkeys(k for r in results for k in r.losses))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", *stats, *terms, "train_time_s"])
    for r in results:
        w.writerow([r.variant, r.seed, *[_csv(r.stats.get(k)) for k in stats],
                    *[_csv(r.losses.get(k)) for k in terms], _csv(r.train_time_s)])
    return buf.getvalue()


def _csv(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _display_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------
# curves and plots
# --------------------------------------------------------------------------------------------------

def history_values(history: Sequence[dict], section: str, key: str) -> dict[int, float]:
    """``{epoch: record[section][key]}`` of the epochs where it was recorded (``coco`` is null on epochs
    without evaluation); ``section`` is ``"coco"`` or ``"train"``."""
    out = {}
    for rec in history:
        values = rec.get(section)
        if values and key in values and values[key] is not None:
            out[int(rec["epoch"])] = float(values[key])
    return out


def epoch_curve(per_seed: Sequence[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over seeds at each epoch any seed recorded.

    Args:
        per_seed: one ``{epoch: value}`` per seed (from :func:`history_values`).

    Returns:
        ``(epochs, mean, lo, hi)``, epochs ascending; at each epoch only the seeds that recorded it count.
    """
    epochs = sorted({e for curve in per_seed for e in curve})
    mean, lo, hi = [], [], []
    for e in epochs:
        values = [curve[e] for curve in per_seed if e in curve]
        mean.append(math.fsum(values) / len(values))
        lo.append(min(values))
        hi.append(max(values))
    return epochs, mean, lo, hi


def write_plots(variants: Sequence[Variant], results: Sequence[RunResult], out_dir: str | Path) -> list[Path] | None:
    """``map_curves.png`` (mAP50-95 vs epoch) and ``loss_curves.png`` (one panel per loss term): per variant
    the mean over seeds, with a band from the min to the max seed.

    Returns the files written (none when no run has finished), or None when matplotlib is not installed.
    """
    if not results:
        return []
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    out_dir = Path(out_dir)
    by_variant = [(i, v, [r for r in results if r.variant == v.name]) for i, v in enumerate(variants)]
    by_variant = [(i, v, rs) for i, v, rs in by_variant if rs]
    terms = list(dict.fromkeys(k for r in results for rec in r.history for k in (rec.get("train") or {})))

    def draw(ax, section: str, key: str) -> None:
        for i, v, rs in by_variant:
            epochs, mean, lo, hi = epoch_curve([history_values(r.history, section, key) for r in rs])
            if not epochs:
                continue
            color = f"C{i % 10}"
            ax.plot(epochs, mean, color=color, marker="o" if len(epochs) < 30 else None, markersize=3,
                    label=f"{v.name} (n={len(rs)})")
            if len(rs) > 1:
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    draw(ax, "coco", "mAP")
    ax.set_ylabel("COCO mAP50-95")
    ax.set_title("mAP50-95 per epoch: mean over seeds, band = min..max")
    if by_variant:
        ax.legend(fontsize="small")
    written = [out_dir / "map_curves.png"]
    fig.savefig(written[0], dpi=120)

    fig = Figure(figsize=(4.5 * max(len(terms), 1), 4), layout="constrained")
    fig.suptitle("training loss terms per epoch: mean over seeds, band = min..max "
                 "(a term's scale depends on its loss function)", fontsize="medium")
    axes = fig.subplots(1, max(len(terms), 1), squeeze=False)[0]
    for ax, term in zip(axes, terms):
        draw(ax, "train", term)
        ax.set_title(term)
    if by_variant and terms:
        axes[0].legend(fontsize="small")
    written.append(out_dir / "loss_curves.png")
    fig.savefig(written[1], dpi=120)
    return written


# --------------------------------------------------------------------------------------------------
# the whole ablation
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AblationReport:
    """What :func:`ablate` did: the run outcomes (empty with ``summary_only``), the summary rows and text,
    the files written."""

    outcomes: list[RunOutcome]
    rows: list[VariantRow]
    markdown: str
    files: list[Path]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def write_summary(spec: AblationSpec, runs: Sequence[PlannedRun], out_dir: str | Path, *, plots: bool = True,
                  log: Callable[[str], None] = print) -> tuple[list[VariantRow], str, list[Path]]:
    """Read the finished runs and write summary.md, summary.csv, runs.csv (and the plots when ``plots``).

    Returns ``(rows, markdown, files written)``. Unfinished runs are listed under the table.
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
    rows = summarize(spec.variants, results, len(spec.seeds))
    first = runs[0].cfg if runs else None
    markdown = format_markdown(spec, rows, first.data.dataset if first else "?", first.eval.split if first else "?",
                               notes)
    files = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "runs.csv"]
    files[0].write_text(markdown, encoding="utf-8")
    files[1].write_text(format_summary_csv(rows), encoding="utf-8")
    files[2].write_text(format_runs_csv(results), encoding="utf-8")
    if plots:
        written = write_plots(spec.variants, results, out_dir)
        if written is None:
            log("matplotlib is not installed: skipping map_curves.png and loss_curves.png "
                "(pip install matplotlib, or the project's `plot` extra)")
        else:
            files += written
    return rows, markdown, files


def ablate(spec: AblationSpec, out_dir: str | Path | None = None, *, train: Callable[..., dict] | None = None,
           progress: bool = True, keep_going: bool = True, summary_only: bool = False,
           log: Callable[[str], None] = print) -> AblationReport:
    """Validate every run, train what is missing, and write the summary (see the module docstring).

    Args:
        spec: what to run.
        out_dir: the output folder; default ``spec.out`` or :func:`default_out_dir`.
        train: the training function (default ``detector.engine.trainer.fit``).
        progress: progress bars inside each run.
        keep_going: after a failed run, go on with the next one (else stop there).
        summary_only: train nothing; summarise the runs that are finished.
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
        f"(base {_display_path(spec.base)}): {status.count('done')} done, {status.count('partial')} to resume, "
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
    rows, markdown, files = write_summary(spec, runs, out_dir, log=log)
    log(markdown)
    log(f"Summary written to {files[0]} ({', '.join(f.name for f in files[1:])})")
    return AblationReport(outcomes, rows, markdown, files)


__all__ = [
    "AblationReport", "AblationSpec", "PlannedRun", "RunOutcome", "RunResult", "Variant", "VariantRow",
    "ablate", "check_existing_runs", "config_differences", "default_out_dir", "epoch_curve", "format_duration",
    "format_markdown", "format_markdown_table", "format_mean_std", "format_runs_csv", "format_summary_csv",
    "history_values", "load_spec", "mean_std", "plan_runs", "read_run_result", "run_all", "run_status",
    "spec_from_vary", "split_values", "summarize", "validate_config", "value_name", "with_cli_overrides",
    "write_plots", "write_summary",
]
