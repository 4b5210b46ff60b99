"""YAML reading with line numbers: plain values plus the map ``key path -> (file, line)``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from detector.config.keys import KeyPath, Source, _describe, _path_str
from detector.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 and Python do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def parse_yaml_with_lines(text: str, file: str, with_lines: bool = True) -> tuple[Any, dict[KeyPath, Source]]:
    """Parse YAML text into plain values and a map ``path -> (file, line)`` of every key and list item.

    ``file`` names the text in errors and sources; ``with_lines=False`` (a ``--set`` value) leaves lines out.
    Raises ConfigError on syntax errors, non-string keys, duplicate keys, merge keys and unsafe tags.
    """
    loader = _Loader(text)
    sources: dict[KeyPath, Source] = {}

    def line_of(node: yaml.Node) -> int | None:
        return node.start_mark.line + 1 if with_lines else None

    def build(node: yaml.Node, path: KeyPath) -> Any:
        if not isinstance(node, yaml.ScalarNode) and node.tag not in (_MAP_TAG, _SEQ_TAG):
            raise ConfigError(_path_str(path), f"unsupported YAML tag {node.tag!r}; write plain mappings, lists "
                              f"and scalars", file, line_of(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ConfigError(_path_str(path), "YAML merge keys (<<) are not supported; use base: to "
                                      "inherit from another file", file, line_of(key_node))
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise ConfigError(_path_str(path), f"keys must be names, got {_describe(key)}", file,
                                      line_of(key_node))
                if key in first:
                    raise ConfigError(_path_str(path + (key,)), f"duplicate key (first set on line {first[key]})",
                                      file, line_of(key_node))
                first[key] = line_of(key_node)
                sources[path + (key,)] = (file, line_of(key_node))
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                sources[path + (i,)] = (file, line_of(item))
                items.append(build(item, path + (i,)))
            return items
        return loader.construct_object(node, deep=True)

    try:
        node = loader.get_single_node()
        value = None if node is None else build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark and with_lines else None
        raise ConfigError("", f"invalid YAML: {exc.problem or exc.context}", file, line) from None
    except yaml.YAMLError as exc:  # errors without a position
        raise ConfigError("", f"invalid YAML: {exc}", file) from None
    finally:
        loader.dispose()
    return value, sources


def read_yaml_file(path: Path, what: str = "config") -> tuple[Any, dict[KeyPath, Source]]:
    """Read and parse a YAML file with line numbers; a ConfigError naming the file if it cannot be read."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {what}: {exc.strerror}", file) from None
    return parse_yaml_with_lines(text, file)
