"""Saving: a config as plain containers (:func:`config_to_dict`) and as a resolved YAML file."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from detector.config.fields import PartSpec
from detector.config.schema import Config


def config_to_dict(cfg: Any) -> Any:
    """The config as plain nested dicts/lists/scalars, in schema order (sections, then fields).

    A :class:`PartSpec` without parameters becomes its bare name, otherwise ``{"name": ..., **params}``,
    i.e. the form written in YAML. The result is YAML-safe and loads with ``torch.load(weights_only=True)``.
    """
    if isinstance(cfg, PartSpec):
        return cfg.name if not cfg.params else {"name": cfg.name, **copy.deepcopy(cfg.params)}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the fully resolved config (no ``base:``) as YAML; loading the file gives an equal Config.

    Creates parent folders. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)
    path.write_text("# Fully resolved config (detector.config.save_config)\n" + text, encoding="utf-8")
    return path
