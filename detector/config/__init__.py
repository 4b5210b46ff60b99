"""Experiment config: a typed dataclass schema, YAML files with ``base:`` inheritance, dotted overrides.

A config file is a YAML mapping of sections (``model``, ``data``, ``augment``, ``assigner``, ``sampler``,
``loss``, ``train``, ``eval``); every key is optional and defaults to YOLOv5's ``hyp.scratch-low`` recipe. A file may
name one or more other files under ``base:`` (a string or a list, resolved relative to the including file,
then against the repository's ``configs/`` folder); bases are merged in order, then the file itself:

* mappings merge key by key (the child wins), lists and scalars replace;
* a part (loss, assigner, sampler, head, coder, reduction) given as a bare name (``box: ciou``) is shorthand
  for ``{name: ciou}``; a child mapping without ``name`` (``box: {eps: 1.0e-9}``) adds parameters to the
  inherited part, a child mapping with ``name`` replaces the inherited part and its parameters.

Command-line overrides (``--set train.epochs=50 loss.box={name: focal_eiou, gamma: 0.5}``) are merged last,
with the same rules; each value is parsed as YAML.

Every error is a :class:`~detector.errors.ConfigError` naming the file and line (or the ``--set`` item),
the dotted key path and what would be valid. The loaded :class:`Config` remembers where each key was set;
:func:`where` and :func:`config_error` let later validators (e.g. the loss tables) point at the same place.

Config objects hold only dataclasses of ``str/int/float/bool/None/list/dict``; :func:`config_to_dict`
turns one into plain containers (YAML- and ``torch.load(weights_only=True)``-safe) and
:func:`config_from_dict` turns such a dict back into a validated config.
"""
from __future__ import annotations

from detector.config.data import AugmentConfig, DataConfig
from detector.config.fields import LossSpec, PartSpec
from detector.config.keys import KeyPath, Source, config_error, where
from detector.config.load import (
    CONFIG_DIR, DATA_DIR, REPO_ROOT, config_from_dict, load_config, resolve_config_path, resolve_dataset,
)
from detector.config.model import LossConfig, ModelConfig, OneToOneConfig
from detector.config.save import config_to_dict, save_config
from detector.config.schema import Config
from detector.config.train import EvalConfig, TrainConfig
from detector.config.yaml_lines import parse_yaml_with_lines, read_yaml_file
from detector.errors import ConfigError

__all__ = [
    "AugmentConfig", "CONFIG_DIR", "Config", "ConfigError", "DATA_DIR", "DataConfig", "EvalConfig", "KeyPath",
    "LossConfig", "LossSpec", "ModelConfig", "OneToOneConfig", "PartSpec", "REPO_ROOT", "Source", "TrainConfig",
    "config_error", "config_from_dict", "config_to_dict", "load_config", "parse_yaml_with_lines", "read_yaml_file",
    "resolve_config_path", "resolve_dataset", "save_config", "where",
]
