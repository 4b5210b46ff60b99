"""Turn a config loss entry into a callable with its parameters bound.

A config names a loss in one of two forms::

    loss:
      box: ciou                           # a name from BOX
      cls: {name: focal, gamma: 1.5}      # a name from CLS plus keyword parameters

:func:`parse_loss_spec` looks the name up in a table (``BOX`` of :mod:`detector.losses.box`, ``CLS`` of
:mod:`detector.losses.classification`), checks every parameter against the function's keyword parameters
(via :mod:`inspect`) and returns a :class:`LossSpec`. Mistakes raise :class:`detector.errors.ConfigError`
naming the key path (``loss.box.name``, ``loss.cls.gamma``), listing the valid choices and suggesting the
closest one.
"""
from __future__ import annotations

import difflib
import inspect
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import Tensor

from detector.errors import ConfigError
from detector.losses.stateful import StatefulLoss

# Keyword inputs the criterion supplies itself; a config may not set them.
CALLER_SUPPLIED = frozenset({"reduction", "pred_log_var", "image_size"})


@dataclass(frozen=True)
class LossSpec:
    """A loss function with its config parameters bound.

    Attributes:
        name (str): the config name (``"focal_eiou"``).
        fn (Callable): the loss function from the table; for a stateful loss (a :class:`StatefulLoss` class in
            the table: ``wiou``, ``ghm``) a fresh instance of it, so each spec, hence each run's criterion, starts
            from the initial state.
        params (Mapping[str, Any]): the bound keyword parameters (read-only), only those the config set.
    """

    name: str
    fn: Callable[..., Tensor]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if is_stateful_loss(self.fn):
            object.__setattr__(self, "fn", self.fn())

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """Call ``fn(*args, **params, **kwargs)``; call-time keywords must not repeat a bound parameter."""
        return self.fn(*args, **self.params, **kwargs)

    def accepts(self, keyword: str) -> bool:
        """Whether ``fn``'s signature names ``keyword`` (how the criterion decides to pass ``pred_log_var``)."""
        return keyword in inspect.signature(self.fn).parameters

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"LossSpec({self.name}{', ' if args else ''}{args})"


def is_stateful_loss(entry: Any) -> bool:
    """Whether a table entry is a stateful loss class (:mod:`detector.losses.stateful`), not a function."""
    return isinstance(entry, type) and issubclass(entry, StatefulLoss)


def loss_signature(entry: Any) -> inspect.Signature:
    """The call signature of a table entry: a function's own, a stateful loss class's ``__call__`` without ``self``."""
    if is_stateful_loss(entry):
        signature = inspect.signature(entry.__call__)
        return signature.replace(parameters=list(signature.parameters.values())[1:])
    return inspect.signature(entry)


def _choices_message(kind: str, given: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(given, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {given!r}{hint}; valid: {', '.join(valid)}"


def configurable_params(fn: Callable[..., Any], inputs: int = 2,
                        supplied: frozenset[str] = CALLER_SUPPLIED) -> dict[str, inspect.Parameter]:
    """The parameters of a loss (or another part's constructor) a config may set, by name.

    Every parameter that can be passed by keyword, except the first ``inputs`` (a loss's ``pred, target`` or
    ``logits, target``; 0 for a constructor) and those in ``supplied`` (what the caller passes itself).
    """
    keyword_kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(loss_signature(fn).parameters.values())[inputs:]
    return {p.name: p for p in params if p.kind in keyword_kinds and p.name not in supplied}


def _check_value(key: str, param: inspect.Parameter, value: Any) -> None:
    """Raise a ConfigError when ``value`` cannot stand for ``param``'s default (number for a number, ...)."""
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "true or false"
    elif isinstance(default, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        expected = "a string"
    else:
        return
    if not ok:
        raise ConfigError(key, f"expected {expected} (default {default!r}), got {value!r}")


def parse_loss_spec(spec: Any, table: Mapping[str, Callable[..., Any]], key: str = "loss", *, inputs: int = 2,
                    supplied: frozenset[str] = CALLER_SUPPLIED, kind: str = "loss") -> LossSpec:
    """Parse ``"ciou"`` or ``{"name": "focal_eiou", "gamma": 0.5}`` against ``table`` into a :class:`LossSpec`.

    Args:
        spec: a loss name (str), a mapping with ``name`` and keyword parameters, an object with ``name``
            and ``params`` attributes (``detector.config.LossSpec``), or a :class:`LossSpec` (returned
            unchanged).
        table: config name -> loss function (``BOX`` or ``CLS``).
        key: dotted config path of the entry, used in error messages (``"loss.box"``).
        inputs, supplied: see :func:`configurable_params` (``inputs=0`` and the constructor's caller-supplied
            names parse an assigner, sampler, head, coder or reduction entry against its table).
        kind: what the table holds, for messages (``"loss"``, ``"assigner"``).

    Returns:
        LossSpec with the parameters the config set (the function's defaults fill the rest at call time).

    Raises:
        ConfigError: the spec is neither a string nor a mapping, has no ``name``, names an unknown loss,
            sets an unknown parameter, a parameter the criterion supplies, or a value of the wrong type.
    """
    if isinstance(spec, LossSpec):
        return spec
    if not isinstance(spec, (str, Mapping)) and hasattr(spec, "name") and hasattr(spec, "params"):
        spec = {"name": spec.name, **dict(spec.params)}  # detector.config.LossSpec
    if isinstance(spec, str):
        name, params, name_key = spec, {}, key
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(
                key,
                f"a {kind} given as a mapping needs a 'name' (one of: {', '.join(table)}), got keys {sorted(spec)}",
            )
        name, params, name_key = spec["name"], {k: v for k, v in spec.items() if k != "name"}, f"{key}.name"
    else:
        raise ConfigError(
            key, f"expected a {kind} name or {{name: ..., param: value}}, got {type(spec).__name__} {spec!r}"
        )
    if not isinstance(name, str) or name not in table:
        raise ConfigError(name_key, _choices_message(kind, str(name), list(table)))
    fn = table[name]
    allowed = configurable_params(fn, inputs, supplied)
    for param_name, value in params.items():
        param_key = f"{key}.{param_name}"
        if param_name in supplied:
            raise ConfigError(param_key, f"{param_name!r} is supplied by the framework and cannot be set in a config")
        if param_name not in allowed:
            valid = list(allowed)
            if not valid:
                raise ConfigError(param_key, f"{kind} {name!r} takes no parameters, got {param_name!r}")
            raise ConfigError(param_key, _choices_message(f"parameter of {kind} {name!r}", str(param_name), valid))
        _check_value(param_key, allowed[param_name], value)
    return LossSpec(name=name, fn=fn, params=params)


def make_loss(table: Mapping[str, Callable[..., Tensor]], spec: Any, key: str = "loss") -> LossSpec:
    """:func:`parse_loss_spec` with the table first (``make_loss(BOX, cfg.loss.box, key="loss.box")``)."""
    return parse_loss_spec(spec, table, key)


def box_loss_table() -> Mapping[str, Callable[..., Tensor]]:
    """``BOX`` of :mod:`detector.losses.box`, imported on first use."""
    from detector.losses.box import BOX

    return BOX


def cls_loss_table() -> Mapping[str, Callable[..., Tensor]]:
    """``CLS`` of :mod:`detector.losses.classification` (classification and ranking losses)."""
    from detector.losses.classification import CLS

    return CLS


def parse_box_loss(spec: Any, key: str = "loss.box") -> LossSpec:
    """:func:`parse_loss_spec` against ``BOX``."""
    return parse_loss_spec(spec, box_loss_table(), key)


def parse_cls_loss(spec: Any, key: str = "loss.cls") -> LossSpec:
    """:func:`parse_loss_spec` against ``CLS`` (also for the objectness slot: ``key="loss.obj"``)."""
    return parse_loss_spec(spec, cls_loss_table(), key)
