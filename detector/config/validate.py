"""Validation: plain merged values against the dataclass schema (unknown keys, types, choices, ranges,
checks across sections), raising :class:`~detector.errors.ConfigError` at the key's file and line."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Union

from detector.config.fields import PartSpec
from detector.config.keys import KeyPath, Source, _describe, _error
from detector.config.schema import Config, _strip_optional
from detector.errors import ConfigError


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is PartSpec:
        return "a name or a mapping {name: ..., <param>: value}"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: KeyPath, sources: dict[KeyPath, Source]) -> Any:
    """Check ``value`` against the annotated type ``tp``; returns it converted (int -> float, PartSpec)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = _strip_optional(tp)
        if value is None or not _matches(value, inner):
            raise _error(sources, path, f"expected {_type_name(tp)}, got {_describe(value)}")
        return _coerce(value, inner, path, sources)
    if tp is PartSpec:
        return _part_spec(value, path, sources)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build_section(tp, value, path, sources)
    if tp is Any:
        return value
    if not _matches(value, tp):
        raise _error(sources, path, f"expected {_type_name(tp)}, got {_describe(value)}")
    if tp is float:
        if not math.isfinite(value):
            raise _error(sources, path, f"expected a finite number, got {value!r}")
        return float(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, path + (i,), sources) for i, v in enumerate(value)]
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _error(sources, path, f"keys must be names, got {_describe(k)}")
            out[k] = _coerce(v, value_tp, path + (k,), sources)
        return out
    return value


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value``'s outer type fits ``tp`` (int fits float; bool fits neither int nor float)."""
    if tp is PartSpec:
        return isinstance(value, (str, dict))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    kinds = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, list),
        dict: lambda v: isinstance(v, dict),
    }
    kind = typing.get_origin(tp) or tp
    if kind not in kinds:
        raise TypeError(f"config schema type {tp!r} is not supported")
    return kinds[kind](value)


def _part_spec(value: Any, path: KeyPath, sources: dict[KeyPath, Source]) -> PartSpec:
    """``"ciou"`` -> ``PartSpec("ciou", {})``; ``{name: focal, gamma: 1.5}`` -> ``PartSpec("focal", {"gamma": 1.5})``.

    Parameter names and values are not checked here (``detector/losses/spec.py`` does that).
    """
    if isinstance(value, str):
        if not value.strip():
            raise _error(sources, path, "the name must not be empty")
        return PartSpec(value, {})
    if isinstance(value, dict):
        if "name" not in value:
            raise _error(sources, path, "a part given as a mapping needs a 'name' key, e.g. "
                                        f"{{name: focal, gamma: 1.5}}; "
                                        f"got {_describe(value)}")
        name = value["name"]
        if not isinstance(name, str) or not name.strip():
            raise _error(sources, path + ("name",), f"expected a name, got {_describe(name)}")
        return PartSpec(name, {k: copy.deepcopy(v) for k, v in value.items() if k != "name"})
    raise _error(sources, path, f"expected {_type_name(PartSpec)}, got {_describe(value)}")


def _unknown_key(key: str, valid: list[str], path: KeyPath, sources: dict[KeyPath, Source]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    what = "section" if not path else "key"
    return _error(sources, path + (key,), f"unknown {what}; {hint}")


def _build_section(cls: type, raw: Any, path: KeyPath, sources: dict[KeyPath, Source]) -> Any:
    """Validate mapping ``raw`` against dataclass ``cls`` (unknown keys, types, choices, ranges)."""
    if not isinstance(raw, dict):
        raise _error(sources, path, f"expected a mapping of {cls.__name__} keys, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _unknown_key(str(key), list(fields), path, sources)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        p = path + (name,)
        value = _coerce(raw[name], hints[name], p, sources)
        if value is not None:
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise _error(sources, p, f"{value!r} is not one of {', '.join(choices)}{hint}")
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                sub, msg = problem if isinstance(problem, tuple) else ((), problem)
                raise _error(sources, p + sub, msg)
        kwargs[name] = value
    return cls(**kwargs)


def _check_consistency(cfg: Config, sources: dict[KeyPath, Source]) -> None:
    """Checks across sections: levels agree, mosaic epochs fit, variance voting has variances."""
    levels = len(cfg.model.strides)
    if cfg.model.anchors is not None and len(cfg.model.anchors) != levels:
        raise _error(sources, ("model", "anchors"), f"has {len(cfg.model.anchors)} levels but model.strides has "
                                                     f"{levels}; give one anchor list per stride")
    balance = cfg.loss.reduction.params.get("level_balance") if cfg.loss.reduction.name == "yolov5" else None
    if isinstance(balance, list) and len(balance) != levels:
        raise _error(sources, ("loss", "reduction", "level_balance"),
                     f"has {len(balance)} weights but model.strides has {levels} levels; give one per level")
    if cfg.data.img_size % max(cfg.model.strides):
        raise _error(sources, ("data", "img_size"), f"{cfg.data.img_size} is not a multiple of the largest "
                                                     f"stride {max(cfg.model.strides)}")
    if cfg.train.close_mosaic > cfg.train.epochs:
        raise _error(sources, ("train", "close_mosaic"), f"{cfg.train.close_mosaic} is more than train.epochs "
                                                          f"({cfg.train.epochs})")
    if cfg.eval.variance_voting and not cfg.model.box_uncertainty:
        raise _error(sources, ("eval", "variance_voting"), "needs model.box_uncertainty: true (variance voting "
                                                            "weights boxes by their predicted variance)")


def _build_config(data: dict, sources: dict[KeyPath, Source]) -> Config:
    cfg = _build_section(Config, data, (), sources)
    _check_consistency(cfg, sources)
    cfg._sources = {p: s for p, s in sources.items()}  # not a dataclass field: excluded from ==, asdict, save
    return cfg
