"""Field machinery of the schema: :func:`_opt` (a dataclass field with ``choices`` / ``check`` metadata), the
reusable checks, and :class:`PartSpec`, the field type of every swappable part."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from detector.config.keys import KeyPath


# --------------------------------------------------------------------------------------------------
# field checks: each returns None when the value is fine, else a message (optionally with a sub-path)
# --------------------------------------------------------------------------------------------------

def _num(x: float) -> str:
    """Format a bound for messages: 1.0 -> '1', 0.5 -> '0.5'."""
    return f"{x:g}"


def _in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[Any], str | None]:
    """A check that a number lies in ``[lo, hi]`` (``(`` / ``)`` where open; None = unbounded)."""
    def check(value: float) -> str | None:
        ok = (lo is None or (value > lo if lo_open else value >= lo)) and \
             (hi is None or (value < hi if hi_open else value <= hi))
        if ok:
            return None
        if hi is None:
            return f"{value!r} must be {'>' if lo_open else '>='} {_num(lo)}"
        if lo is None:
            return f"{value!r} must be {'<' if hi_open else '<='} {_num(hi)}"
        return (f"{value!r} is outside {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}"
                f"{')' if hi_open else ']'}")
    return check


def _multiple_of(k: int) -> Callable[[int], str | None]:
    """A check that a positive int is a multiple of ``k``."""
    def check(value: int) -> str | None:
        if value <= 0 or value % k:
            return f"{value} is not a multiple of {k}"
        return None
    return check


def _non_empty(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _check_device(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return None
    return f"{value!r} is not one of auto, cpu, cuda, cuda:N (N a GPU index)"


def _check_anchors(value: list[list[int]]) -> tuple[KeyPath, str] | str | None:
    """Anchors: one list per level of ``(w, h)`` pixel pairs, the same number of pairs per level."""
    if not value:
        return "needs one list of (w, h) pairs per level"
    for i, level in enumerate(value):
        if not level or len(level) % 2:
            return (i,), f"has {len(level)} values; expected (w, h) pairs, e.g. [10, 13, 16, 30, 33, 23]"
        if len(level) != len(value[0]):
            return (i,), (f"has {len(level) // 2} anchors but level 0 has {len(value[0]) // 2}; "
                          f"every level needs the same number")
        for j, v in enumerate(level):
            if v <= 0:
                return (i, j), f"{v} must be > 0 (anchor sizes are pixels)"
    return None


def _check_strides(value: list[int]) -> tuple[KeyPath, str] | str | None:
    if not value:
        return "needs one stride per level, e.g. [8, 16, 32]"
    for i, s in enumerate(value):
        if s <= 0:
            return (i,), f"{s} must be > 0"
        if i and s <= value[i - 1]:
            return (i,), f"{s} must be larger than the previous stride {value[i - 1]} (levels go fine to coarse)"
    return None


def _check_each(check: Callable[[Any], str | None]) -> Callable[[Any], tuple[KeyPath, str] | None]:
    """Apply ``check`` to every item of a list or every value of a mapping, naming the bad item."""
    def check_all(value: list | dict) -> tuple[KeyPath, str] | None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            msg = check(v)
            if msg:
                return (k,), msg
        return None
    return check_all


def _opt(default: Any = dataclasses.MISSING, *, choices: tuple[str, ...] | None = None,
         check: Callable[[Any], Any] | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with validation metadata (``choices`` for str fields, ``check`` for values)."""
    meta = {"choices": choices, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------------
# swappable parts
# --------------------------------------------------------------------------------------------------

@dataclass
class PartSpec:
    """One swappable part (loss, assigner, sampler, head, coder, reduction) by name with its keyword parameters.

    Written in YAML either as a bare name (``ciou``) or as a mapping (``{name: focal, gamma: 1.5}``);
    names and parameters are checked against the part's table (``detector.build`` and the loss tables) by
    ``detector.build.check_parts`` before anything trains; its errors name the file and line.
    """

    name: str
    """Name in the part's table (e.g. ``ciou``, ``focal``, ``yolov5``, ``rpn``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the part's function or constructor (e.g. ``{"gamma": 1.5}``)."""


LossSpec = PartSpec
"""The loss entries are part specs too (the name kept for the loss tables' callers)."""
