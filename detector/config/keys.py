"""Key paths, the source map (where each key was set) and the errors that point at them."""
from __future__ import annotations

import re
import typing
from typing import Any, Iterable, Union

from detector.errors import ConfigError

if typing.TYPE_CHECKING:
    from detector.config.schema import Config


Source = tuple[Union[str, None], Union[int, None]]
"""Where a key was set: ``(file, line)`` (1-based line), ``("--set key=value", None)`` or ``(None, None)``."""
KeyPath = tuple[Union[str, int], ...]
"""A key path as a tuple: ``("model", "anchors", 1)`` is ``model.anchors[1]``."""


def _path_str(path: KeyPath) -> str:
    """``("model", "anchors", 1)`` -> ``"model.anchors[1]"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse_path(key: str) -> KeyPath:
    """``"model.anchors[1]"`` -> ``("model", "anchors", 1)``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _lookup(sources: dict[KeyPath, Source], path: KeyPath) -> Source:
    """Source of ``path``, else of its longest recorded prefix, else of its first recorded descendant
    (an override ``trian.epochs=5`` records only the leaf), else ``(None, None)`` (a default)."""
    for n in range(len(path), 0, -1):
        if path[:n] in sources:
            return sources[path[:n]]
    for p in _under(sources, path) if path else ():
        return sources[p]
    return (None, None)


def _error(sources: dict[KeyPath, Source], path: KeyPath, message: str) -> ConfigError:
    file, line = _lookup(sources, path)
    return ConfigError(_path_str(path), message, file, line)


def where(cfg: Config, key: str) -> Source:
    """Where ``key`` (dotted, e.g. ``"loss.box"`` or ``"model.anchors[1]"``) of a loaded config was set.

    Returns ``(file, line)`` (absolute file path, 1-based line of the key), ``("--set key=value", None)``
    for a command-line override, or ``(None, None)`` for a default or a config not built by this module.
    A key inside a value (``loss.box.gamma`` of ``box: focal``) reports the enclosing key's place.
    """
    return _lookup(getattr(cfg, "_sources", {}), _parse_path(key))


def config_error(cfg: Config, key: str, message: str) -> ConfigError:
    """A :class:`ConfigError` for ``key`` naming the file and line where ``cfg`` set it (see :func:`where`)."""
    file, line = where(cfg, key)
    return ConfigError(key, message, file, line)


def _under(paths: Iterable[KeyPath], prefix: KeyPath) -> list[KeyPath]:
    return [p for p in paths if p[:len(prefix)] == prefix]


def _value_paths(value: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every key / index path inside a plain value (not including the empty path)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out: list[KeyPath] = []
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_value_paths(v, prefix + (k,)))
    return out


def _describe(value: Any) -> str:
    """``"str 'ten'"``, ``"float 10.5"``, ``"null"``, ``"mapping {...}"`` for error messages."""
    if value is None:
        return "null"
    kind = {dict: "mapping", list: "list"}.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"
