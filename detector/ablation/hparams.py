"""TensorBoard's hyper-parameter view of an ablation: one HParams session per finished run, written with
``SummaryWriter.add_hparams`` into ``out/hparams/<variant>_seed<k>/``.

A session's hyper-parameters are ``variant``, ``seed`` and every config key that some variant overrides (its
value in that variant, ``(base)`` where the variant leaves the base config's); its metrics are the final COCO
stats (``hparam/mAP``, ``hparam/mAP50``, ``hparam/mAP75``) and the last-epoch loss terms (``hparam/loss/lbox``
...). ``tensorboard --logdir out/hparams`` then shows them in its HPARAMS tab.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import yaml

from detector.ablation.results import SUMMARY_METRICS, RunResult
from detector.ablation.spec import Variant, override_key

HPARAMS_DIR = "hparams"
"""The folder of the ablation that holds the HParams sessions."""


def hparam_value(text: str) -> int | float | bool | str:
    """An override's value as TensorBoard can show it: a YAML number or boolean as such, anything else (a
    name, a mapping like ``{name: focal, gamma: 2}``) as its text. ``"0.5"`` -> 0.5, ``"ciou"`` -> ``"ciou"``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text.strip()
    return value if isinstance(value, (bool, int, float)) else text.strip()


def run_hparams(variant: Variant, seed: int, keys: Sequence[str]) -> dict[str, Any]:
    """``{"variant": name, "seed": seed, key: value ...}`` for each of ``keys`` (the variant's last override of
    the key, else ``"(base)"``)."""
    values = {override_key(o): o.partition("=")[2] for o in variant.overrides}
    return {"variant": variant.name, "seed": seed,
            **{k: hparam_value(values[k]) if k in values else "(base)" for k in keys}}


def run_metrics(result: RunResult) -> dict[str, float]:
    """``{"hparam/mAP": ..., "hparam/mAP50": ..., "hparam/mAP75": ..., "hparam/loss/<term>": ...}`` of a run."""
    metrics = {f"hparam/{key}": float(result.stats[key]) for key, _ in SUMMARY_METRICS if key in result.stats}
    metrics.update({f"hparam/loss/{k}": float(v) for k, v in result.losses.items()})
    return metrics


def write_hparams(variants: Sequence[Variant], results: Sequence[RunResult], out_dir: str | Path) -> Path | None:
    """Rewrite ``out_dir/hparams`` with one session per finished run (earlier sessions there are removed, so a
    re-run of the report does not duplicate them). Returns the folder, or None when no run has finished."""
    if not results:
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(out_dir) / HPARAMS_DIR
    if folder.is_dir():
        shutil.rmtree(folder)
    keys = list(dict.fromkeys(override_key(o) for v in variants for o in v.overrides))
    by_name = {v.name: v for v in variants}
    with SummaryWriter(log_dir=str(folder)) as writer:
        for r in results:
            writer.add_hparams(run_hparams(by_name[r.variant], r.seed, keys), run_metrics(r),
                               run_name=f"{r.variant}_seed{r.seed}")
    return folder
