"""Loading: config and dataset files by path or bare name, ``base:`` inheritance, ``--set`` overrides, then
validation (:func:`load_config`, :func:`config_from_dict`, :func:`resolve_dataset`)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable

from detector.config.keys import KeyPath, Source, _describe, _under, _value_paths, config_error, where
from detector.config.merge import _merge, _parse_override
from detector.config.schema import Config
from detector.config.validate import _build_config
from detector.config.yaml_lines import read_yaml_file
from detector.errors import ConfigError


REPO_ROOT = Path(__file__).resolve().parent.parent.parent
"""The repository root (the folder holding ``detector/``, ``configs/`` and ``data/``)."""
CONFIG_DIR = REPO_ROOT / "configs"
"""Where bare config names (``yolov5_ciou``) are looked up."""
DATA_DIR = REPO_ROOT / "data"
"""Where bare dataset names (``coco128``) are looked up as ``<name>.yaml``."""


def resolve_config_path(name: str, search: list[Path], origin: Source, key: str, config_dir: Path) -> Path:
    """Find config ``name`` (a path, or a bare name with or without ``.yaml``) in ``search`` folders."""
    tried: list[Path] = []
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [folder / given for folder in search]
    for c in list(candidates):
        if c.suffix not in (".yaml", ".yml"):
            candidates.append(c.with_name(c.name + ".yaml"))
    for c in candidates:
        tried.append(c)
        if c.is_file():
            return c.resolve()
    available = sorted(p.stem for p in config_dir.glob("*.yaml")) if config_dir.is_dir() else []
    raise ConfigError(key, f"config {name!r} not found (tried {', '.join(str(t) for t in tried)}); "
                           f"configs in {config_dir}: {', '.join(available) or 'none'}", *origin)


def _load_file(path: Path, chain: tuple[Path, ...], config_dir: Path) -> tuple[dict, dict[KeyPath, Source]]:
    """Read one config file and its bases, merged; ``chain`` holds the files including this one (cycles)."""
    file = str(path)
    data, sources = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"a config file must be a mapping of sections (model, data, augment, assigner, sampler, "
                              f"loss, train, eval), got {_describe(data)}", file, 1)
    layers: list[tuple[dict, dict[KeyPath, Source]]] = []
    if "base" in data:
        base = data.pop("base")
        base_source = sources[("base",)]
        names = [base] if isinstance(base, str) else base
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError("base", f"expected a file name or a list of file names, got {_describe(base)}",
                              *base_source)
        for i, name in enumerate(names):
            origin = sources.get(("base", i), base_source) if isinstance(base, list) else base_source
            base_path = resolve_config_path(name, [path.parent, config_dir], origin, "base", config_dir)
            if base_path in chain or base_path == path:
                cycle = " -> ".join(str(p) for p in (*chain, path, base_path))
                raise ConfigError("base", f"inheritance cycle: {cycle}", *origin)
            layers.append(_load_file(base_path, (*chain, path), config_dir))
        for q in _under(list(sources), ("base",)):
            del sources[q]
    merged: tuple[dict, dict[KeyPath, Source]] = ({}, {})
    for layer in (*layers, (data, sources)):
        merged = _merge(merged, layer)
    return merged


def load_config(path_or_name: str | Path, overrides: Iterable[str] = (), *,
                config_dir: str | Path | None = None) -> Config:
    """Load, merge and validate a config.

    Args:
        path_or_name: a path to a YAML file (tried first, relative to the current directory) or a bare
            name looked up in ``config_dir`` (``yolov5_ciou`` or ``yolov5_ciou.yaml``).
        overrides: ``key=value`` items applied last, e.g. ``["train.epochs=50", "loss.box=giou",
            "loss.box.gamma=0.5", "model.anchors=[[10,13],[30,61],[116,90]]"]``;
            values are parsed as YAML.
        config_dir: where bare names and unresolvable ``base:`` names are looked up; default the
            repository's ``configs/``.

    Returns:
        The validated :class:`Config`; :func:`where` tells where each key was set.

    Raises:
        ConfigError: naming the file and line (or ``--set`` item), the key path and what would be valid.
    """
    config_dir = Path(config_dir) if config_dir is not None else CONFIG_DIR
    if isinstance(overrides, str):  # a single "key=value" passed without a list
        overrides = [overrides]
    path = resolve_config_path(str(path_or_name), [Path.cwd(), config_dir], (None, None), "", config_dir)
    layer = _load_file(path, (), config_dir)
    for item in overrides:
        layer = _merge(layer, _parse_override(item))
    return _build_config(*layer)


def config_from_dict(data: dict, source: str = "<dict>", overrides: Iterable[str] = ()) -> Config:
    """Validate a plain dict (e.g. :func:`config_to_dict` output stored in a checkpoint) into a Config, with
    ``key=value`` ``overrides`` applied last as in :func:`load_config` (a tool's options on a checkpoint's config).

    Errors name ``source`` in place of a file, or the override. ``base:`` is not followed here.
    """
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping of sections, got {_describe(data)}", source)
    layer = (copy.deepcopy(data), {p: (source, None) for p in _value_paths(data)})
    for item in overrides:
        layer = _merge(layer, _parse_override(item))
    return _build_config(*layer)


def resolve_dataset(cfg: Config, data_dir: str | Path | None = None) -> Path:
    """The dataset YAML file named by ``cfg.data.dataset``.

    A bare name (no ``/`` and no ``.yaml``/``.yml`` suffix) is ``<data_dir>/<name>.yaml`` (default the
    repository's ``data/``). A path is tried as given (relative to the current directory), then relative to
    the config file that set it. Raises ConfigError at ``data.dataset`` (file and line) listing the datasets
    available when the file does not exist.
    """
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    name = cfg.data.dataset
    given = Path(name).expanduser()
    if "/" not in name and "\\" not in name and given.suffix not in (".yaml", ".yml"):
        candidates = [data_dir / f"{name}.yaml"]
    else:
        candidates = [given]
        file, _ = where(cfg, "data.dataset")
        if not given.is_absolute() and file and Path(file).is_file():
            candidates.append(Path(file).parent / given)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    available = sorted(p.stem for p in data_dir.glob("*.yaml")) if data_dir.is_dir() else []
    raise config_error(cfg, "data.dataset", f"dataset {name!r} not found (tried "
                       f"{', '.join(str(c) for c in candidates)}); bare names available in {data_dir}: "
                       f"{', '.join(available) or 'none'}")
