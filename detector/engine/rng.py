"""Seeding and capture / restore of every global random generator a training run draws from.

:func:`get_rng_state` returns only tensors, ints, floats, strings and None (nested in dicts and lists), so the
state can be stored in a checkpoint and read back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

MAX_SEED = 2**32 - 1  # numpy's legacy global RNG accepts seeds in [0, 2**32 - 1]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device) with ``seed``.

    With ``deterministic``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops without a
    deterministic implementation warn instead of failing), ``cudnn.deterministic = True``,
    ``cudnn.benchmark = False`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed by deterministic cuBLAS; only
    set when not already set). Without: deterministic algorithms and ``cudnn.deterministic`` are turned off
    (``cudnn.benchmark`` is left as it is).

    Raises:
        ValueError: ``seed`` is not an integer in ``[0, 2**32 - 1]``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def get_rng_state() -> dict[str, Any]:
    """Capture the state of python ``random``, numpy's global RNG, torch CPU and (if available) CUDA RNGs.

    Returns:
        {
          "python": {"version": int, "state": Tensor[625] int64, "gauss_next": float | None},
          "numpy":  {"bit_generator": str, "key": Tensor[624] int64, "pos": int,
                     "has_gauss": int, "cached_gaussian": float},
          "torch":  Tensor[K] uint8,
          "cuda":   list of Tensor uint8, one per visible CUDA device (empty without CUDA),
        }
        (the python and numpy Mersenne-Twister words are < 2**32, so int64 holds them exactly).
    """
    py_version, py_state, gauss_next = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),  # (625,)
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "bit_generator": str(np_name),
            "key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),  # (624,)
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`get_rng_state` output.

    CUDA states are restored for the first ``min(len(state["cuda"]), device_count)`` devices; a state saved
    without CUDA leaves the CUDA generators as they are.

    Raises:
        KeyError: ``state`` lacks one of ``"python"``, ``"numpy"``, ``"torch"``.
    """
    missing = [key for key in ("python", "numpy", "torch") if key not in state]
    if missing:
        raise KeyError(f"rng state is missing {missing}; expected the output of get_rng_state()")
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
