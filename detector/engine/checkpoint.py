"""Atomic checkpoint writing and safe (``weights_only=True``) reading.

Checkpoint contract (a plain dict; the trainer fills it):
    "model"        model state dict
    "ema"          EMA model state dict (``ModelEMA.module.state_dict()``) or None
    "ema_updates"  int, ``ModelEMA.updates`` (0 without EMA)
    "optimizer"    optimizer state dict
    "scaler"       ``torch.amp.GradScaler`` state dict or None
    "epoch"        int, last completed epoch (0-based; training resumes at ``epoch + 1``)
    "best_fitness" float
    "config"       the run config as a plain dict (str/int/float/bool/None, lists, dicts)
    "rng"          ``detector.engine.rng.get_rng_state()``
    "version"      int, ``CHECKPOINT_VERSION`` of the writer
    "metrics"      dict of plain values (last validation metrics)
    "criterion"    ``DetectionCriterion.state_dict()``: the state of stateful losses (``wiou``, ``ghm``) by term,
                   {} without them; optional (checkpoints written before it lack it and resume with {})

Only tensors, str, bytes, int, float, complex, bool, None, dict, OrderedDict, list, tuple, set, torch.Size,
torch.dtype and torch.device may appear anywhere in a checkpoint: that is what ``torch.load(weights_only=True)``
reads back without running pickled code. :func:`save_checkpoint` checks this before writing (a numpy scalar
in ``metrics`` is the usual culprit) so that a run never writes a checkpoint it cannot resume from.
"""
from __future__ import annotations

import collections
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = (
    "model",
    "ema",
    "ema_updates",
    "optimizer",
    "scaler",
    "epoch",
    "best_fitness",
    "config",
    "rng",
    "version",
    "metrics",
)
_LEAF_TYPES = (
    torch.Tensor, torch.nn.Parameter, str, bytes, int, float, complex, bool, type(None),
    torch.Size, torch.dtype, torch.device,
)  # fmt: skip
_CONTAINER_TYPES = (dict, collections.OrderedDict, list, tuple, set)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or is not a checkpoint; the message names the file."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


ZIP_MAGIC = b"PK\x03\x04"
"""First bytes of a ``torch.save`` file (a zip archive, the default since torch 1.6)."""
LEGACY_MAGIC = b"\x80"
"""First byte of a legacy (``_use_new_zipfile_serialization=False``) ``torch.save`` file: a pickle protocol opcode."""


def not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file judging by its first bytes (a text file, an empty file, an
    image...), or None when it starts like one."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(ZIP_MAGIC) or head.startswith(LEGACY_MAGIC):
        return None
    if not head:
        return "the file is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8]!r}"
    return f"it is a text file starting {text.splitlines()[0][:16]!r}" if text.strip() else "it is blank text"


def find_unsafe_value(obj: Any, where: str = "checkpoint") -> str | None:
    """Path and type of the first value that ``torch.load(weights_only=True)`` would refuse, or None.

    Args:
        obj: the object to be saved.
        where: name of ``obj`` used as the root of the returned path.

    Returns:
        e.g. ``"checkpoint['metrics']['mAP']: numpy.float64"``, or None when every value is allowed.
        Types are matched exactly (a ``namedtuple`` or ``defaultdict`` is refused by the loader too).
    """
    stack = [(obj, where)]
    while stack:
        value, path = stack.pop()
        kind = type(value)
        if kind in _LEAF_TYPES:
            continue
        if kind not in _CONTAINER_TYPES:
            return f"{path}: {kind.__module__}.{kind.__qualname__}"
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, f"{path} key {key!r}"))
                stack.append((item, f"{path}[{key!r}]"))
        else:
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
    return None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: the file is either the old one or the complete new one.

    The file gets the mode any file ``open()`` creates (``0o666`` less the umask).
    The state is written to a temporary file in the same directory, flushed and fsynced, then moved over
    ``path`` with ``os.replace`` (atomic on POSIX and Windows); the directory is fsynced where possible. On
    any error the temporary file is removed and ``path`` is untouched. Parent directories are created.

    Args:
        path: destination file (conventionally ``.pt``).
        state: the checkpoint dict (see the module docstring); only weights-only-loadable values.

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: ``state`` holds a value ``load_checkpoint`` could not read back (the message gives its path).
    """
    path = Path(path)
    unsafe = find_unsafe_value(state)
    if unsafe is not None:
        raise TypeError(
            f"cannot save checkpoint {path}: {unsafe} would not load with weights_only=True; convert it to a "
            "tensor or a plain python value (int, float, str, bool, None, list, dict)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp makes 0600; give the mode open() would
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Persist the rename in ``directory`` (POSIX); silently skipped where directories cannot be opened."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    required_keys: tuple[str, ...] = CHECKPOINT_KEYS,
) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: pickled code in the file is never run.

    Args:
        path: checkpoint file written by :func:`save_checkpoint`.
        map_location: passed to ``torch.load`` (default: every tensor on the CPU).
        required_keys: keys the dict must hold; ``()`` accepts any dict (e.g. a bare weights file).

    Returns:
        the checkpoint dict.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointError: the file is corrupt or truncated, holds objects other than tensors and plain
            containers (refused, not unpickled), is not a dict, lacks some of ``required_keys`` (listed), or
            was written by a newer ``CHECKPOINT_VERSION``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist")
    why = not_a_checkpoint(path)
    if why is not None:
        raise CheckpointError(f"checkpoint file {path} is not a torch checkpoint: {why}, where a torch.save file "
                              "(a zip archive such as last.pt / best.pt written by tools/train.py) starts with 'PK'")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it contains pickled objects other than tensors and plain "
                f"containers, which weights_only=True loading does not run (first refusal: "
                f"{_first_line_mentioning(str(err), 'Unsupported global').split(' was not an allowed')[0]})"
            ) from err
        raise CheckpointError(f"checkpoint file {path} is corrupt or not a torch checkpoint: {err}") from err
    except Exception as err:  # torch raises RuntimeError / EOFError / KeyError / ... for damaged files
        raise CheckpointError(
            f"checkpoint file {path} is corrupt, truncated or not a torch checkpoint "
            f"({type(err).__name__}: {str(err)[:200]})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {path} holds a {type(state).__name__}, expected a dict")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint file {path} is not a detector training checkpoint: missing keys {missing} "
            f"(has {sorted(map(str, state))})"
        )
    version = state.get("version")
    if "version" in required_keys and (not isinstance(version, int) or version > CHECKPOINT_VERSION):
        raise CheckpointError(
            f"checkpoint file {path} has version {version!r}; this code reads versions <= {CHECKPOINT_VERSION}"
        )
    return state


def _first_line_mentioning(text: str, needle: str) -> str:
    """The first line of ``text`` containing ``needle`` (stripped), else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if needle in line:
            return line
    return lines[0] if lines else text
