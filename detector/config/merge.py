"""Merging layers (base files, the file itself, ``--set`` overrides) with their source maps; the rules are
in the docstring of :mod:`detector.config`."""
from __future__ import annotations

import copy
import re
from typing import Any

from detector.config.fields import PartSpec
from detector.config.keys import KeyPath, Source, _under, _value_paths
from detector.config.schema import _schema_type, _strip_optional
from detector.config.yaml_lines import parse_yaml_with_lines
from detector.errors import ConfigError


def _merge_into(dst: dict, child: dict, path: KeyPath, sources: dict[KeyPath, Source],
                child_sources: dict[KeyPath, Source]) -> None:
    """Merge ``child`` into ``dst`` in place (see :mod:`detector.config`) and update ``sources`` to match."""
    for key, value in child.items():
        p = path + (key,)
        old = dst.get(key)
        is_loss = _strip_optional(_schema_type(p)) is PartSpec
        if is_loss and isinstance(value, dict) and "name" not in value and isinstance(old, str):
            old = dst[key] = {"name": old}  # `box: ciou` inherited, child adds parameters
            sources[p + ("name",)] = sources.get(p, (None, None))
        if isinstance(value, dict) and isinstance(old, dict) and not (is_loss and "name" in value):
            _merge_into(old, value, p, sources, child_sources)
            if p in child_sources:
                sources[p] = child_sources[p]
        else:
            dst[key] = copy.deepcopy(value)
            for q in _under(list(sources), p):
                del sources[q]
            sources.update({q: child_sources[q] for q in _under(child_sources, p)})


def _merge(base: tuple[dict, dict[KeyPath, Source]], child: tuple[dict, dict[KeyPath, Source]]
           ) -> tuple[dict, dict[KeyPath, Source]]:
    """Merge two ``(data, sources)`` layers into a new one; the child wins."""
    data, sources = copy.deepcopy(base[0]), dict(base[1])
    _merge_into(data, child[0], (), sources, child[1])
    return data, sources


def _parse_override(item: str) -> tuple[dict, dict[KeyPath, Source]]:
    """``"loss.box.gamma=0.5"`` -> ``({"loss": {"box": {"gamma": 0.5}}}, sources)`` (value parsed as YAML)."""
    origin = f"--set {item}"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError("", "expected key=value with a dotted key, e.g. train.epochs=50 or loss.box=giou",
                          origin)
    value, _ = parse_yaml_with_lines(text, origin, with_lines=False)
    path = tuple(key.split("."))
    nested: Any = value
    for part in reversed(path):
        nested = {part: nested}
    sources: dict[KeyPath, Source] = {path: (origin, None)}
    sources.update({path + q: (origin, None) for q in _value_paths(value)})
    return nested, sources
