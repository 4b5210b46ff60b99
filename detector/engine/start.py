"""What happens before a run's first epoch: the dataset check, the config of a resumed run, starting weights.

* :func:`check_training_data`: the splits a run reads (``train`` and ``eval.split``) checked as
  ``tools/check_data.py`` does; every fatal problem listed in one :class:`DatasetError` before anything trains.
* :func:`resume_config`: the config stored in a checkpoint with the few overrides a resumed run may take
  (``train.epochs`` to extend it: the epochs still to run follow the LR schedule of the longer run).
* :func:`load_weights`: a new run that starts from a checkpoint's weights (fresh optimizer, epoch 0).
"""
from __future__ import annotations

import hashlib
import os

import yaml
from torch import nn

from detector.config import Config, config_from_dict
from detector.data.check import HeaderCache, SplitReport, check_dataset
from detector.data.dataset_yaml import load_dataset_yaml
from detector.engine.checkpoint import CheckpointError, load_checkpoint
from detector.errors import ConfigError, DatasetError

RESUME_KEYS = ("train.epochs", "train.eval_interval", "train.device", "data.workers", "data.worker_timeout",
               "eval.batch_size")
"""Keys ``--set`` may change on ``--resume``: none of them changes what the checkpoint holds."""
MAX_WARNINGS = 20
"""Warnings printed by :func:`check_training_data`; the rest are counted (``tools/check_data.py`` lists all)."""


def header_cache_path(yaml_path: str | os.PathLike) -> str:
    """``$XDG_CACHE_HOME/detector/check_data/<hash of the YAML's absolute path>.json`` (``~/.cache`` by default),
    the file ``tools/check_data.py`` uses too."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha1(os.path.abspath(yaml_path).encode()).hexdigest()[:16]
    return os.path.join(base, "detector", "check_data", f"{digest}.json")


def check_training_data(cfg: Config, cache_path: str | None = None) -> list[SplitReport]:
    """Check the ``train`` and ``cfg.eval.split`` splits of ``cfg.data.dataset`` (all their images, not only the
    first ``data.max_images``); print the warnings once; return the reports.

    Image headers are cached by file size and mtime in ``cache_path`` (default :func:`header_cache_path`), so a
    second run reads only the labels. Raises DatasetError listing every fatal problem (file and line or annotation
    id), with the count of each kind.
    """
    from detector.config import resolve_dataset

    yaml_path = resolve_dataset(cfg)
    spec = load_dataset_yaml(str(yaml_path))
    for split in ("train", cfg.eval.split):
        if split not in spec.splits:
            raise spec.error(split, f"no split {split!r}; the YAML defines {sorted(spec.splits)}")
    spec.splits = {s: spec.splits[s] for s in dict.fromkeys(("train", cfg.eval.split))}
    cache = HeaderCache(cache_path or header_cache_path(yaml_path))
    reports = check_dataset(spec, cache)
    try:
        cache.save()
    except OSError as err:  # a read-only home: the check still stands, only the next one is slower
        print(f"note: could not write the image-header cache {cache.path}: {err}")
    problems = [p for r in reports for p in r.problems]
    notes = [p for p in problems if not p.fatal]
    for p in notes[:MAX_WARNINGS]:
        print(f"warning: {p}")
    if len(notes) > MAX_WARNINGS:
        print(f"warning: ... {len(notes) - MAX_WARNINGS} more; python tools/check_data.py {yaml_path} lists them")
    fatal = [p for p in problems if p.fatal]
    if fatal:
        listing = "\n".join(f"  {p}" for p in fatal)
        raise DatasetError(f"{yaml_path}: {len(fatal)} problem(s) in the data stop the run before training "
                           f"(python tools/check_data.py {yaml_path} for the full report):\n{listing}")
    return reports


def resume_config(stored: dict, overrides: list[str], source: str) -> Config:
    """The config stored in a checkpoint, with ``key=value`` overrides of :data:`RESUME_KEYS` applied.

    Raises ConfigError naming the override when its key may not change on resume or its value is invalid.
    """
    data = {section: dict(values) if isinstance(values, dict) else values for section, values in stored.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in RESUME_KEYS:
            raise ConfigError(key, f"--set {item!r} on --resume: only {', '.join(RESUME_KEYS)} may change when a "
                                   "run is resumed (start a new run from its weights with --weights instead)")
        section, name = key.split(".")
        data.setdefault(section, {})[name] = yaml.safe_load(text)
    return config_from_dict(data, source=source)


def load_weights(model: nn.Module, path: str | os.PathLike, names: list[str], ema: bool = True) -> dict:
    """Load a checkpoint's weights into ``model`` (its EMA weights when it has them and ``ema``); return the
    checkpoint.

    Raises CheckpointError naming the file when its class names (count or order) differ from ``names``, listing
    what differs, or when the weights do not fit the model (the first mismatching parameters listed).
    """
    ckpt = load_checkpoint(path, required_keys=("model",))
    stored = ckpt.get("names")
    if stored is not None and list(stored) != list(names):
        raise CheckpointError(f"checkpoint {path} was trained on other classes: "
                              f"{class_difference(list(stored), names)}")
    state = ckpt["ema"] if ema and ckpt.get("ema") is not None else ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("shape checkpoint vs model", shapes)) if keys]
        raise CheckpointError(f"checkpoint {path} does not fit this config's model: {'; '.join(parts)}")
    model.load_state_dict(state)
    return ckpt


def class_difference(stored: list[str], names: list[str]) -> str:
    """What differs between two class lists, for a message: counts, then names missing on either side, then the
    first positions whose names differ."""
    if len(stored) != len(names):
        only_ckpt = [n for n in stored if n not in names]
        only_data = [n for n in names if n not in stored]
        return (f"{len(stored)} classes in the checkpoint, {len(names)} in the dataset"
                + (f"; only in the checkpoint: {only_ckpt[:10]}" if only_ckpt else "")
                + (f"; only in the dataset: {only_data[:10]}" if only_data else ""))
    moved = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(stored, names)) if a != b]
    return f"class order differs (index: checkpoint vs dataset): {', '.join(moved[:10])}"
