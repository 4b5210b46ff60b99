"""Planning: every (variant, seed) run's config loaded and validated before anything trains, and the check
that a run folder found on disk holds the config planned for it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from detector.ablation.spec import AblationSpec, Variant
from detector.config import Config, config_error, config_from_dict, config_to_dict, load_config, resolve_dataset
from detector.errors import ConfigError

IGNORED_CONFIG_KEYS = frozenset({"data.workers", "data.worker_timeout", "train.out_dir", "train.name"})
"""Config keys that may differ between a planned run and the run folder it finds (they do not change results)."""


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


def plan_record(spec: AblationSpec, runs: Sequence[PlannedRun], nproc: int = 1) -> dict:
    """The plan as JSON-ready data: spec fields, the processes per run (``nproc_per_run``: data-parallel ranks;
    each finished run's ``results.json`` holds the ``world_size`` it actually ran with) and each run's variant,
    seed, overrides and folder."""
    return {
        "source": spec.source,
        "base": spec.base,
        "common": list(spec.common),
        "seeds": list(spec.seeds),
        "baseline": spec.reference,
        "nproc_per_run": nproc,
        "variants": {v.name: list(v.overrides) for v in spec.variants},
        "runs": [{"variant": r.variant.name, "seed": r.seed, "overrides": list(r.overrides),
                  "run_dir": str(r.run_dir)} for r in runs],
    }
