"""Keep freed memory in the process on CPU runs (glibc ``mallopt``), so large tensors stop page-faulting every step.

glibc serves every allocation above 32 MB (its largest automatic ``mmap`` threshold) with fresh ``mmap`` pages and
unmaps them on free. A CPU training step allocates such tensors again and again (activations, the head's flattened
outputs, their gradient buffers), and every page of them is faulted in and zeroed by the kernel each time: measured
on the 2-core CPU, 2026-12-04, the YOLOv5 preset's assignment + loss forward and backward at batch 16 (s outputs,
640 px, one thread) took 160 ms with glibc's defaults and 37 ms with mmap off (``benchmarks/bench_assign.py``
``--malloc``). :func:`keep_freed_memory` turns mmap off (``M_MMAP_MAX = 0``) and never trims the heap
(``M_TRIM_THRESHOLD``), as ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`` would at start;
the process then keeps its peak memory until it exits. Elsewhere (no glibc: macOS, Windows, musl) it does nothing.
``train.keep_freed_memory`` (default on) applies it for the length of a CPU ``fit``.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters of glibc's malloc.h
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults (trim threshold then adapts)
NEVER_TRIM = 2**31 - 1  # mallopt takes an int


def _libc():
    """glibc's ``mallopt`` as a ctypes function, or None where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def set_malloc(mmap_max: int, trim_threshold: int) -> bool:
    """``mallopt(M_MMAP_MAX, mmap_max)`` and ``mallopt(M_TRIM_THRESHOLD, trim_threshold)``; False where that is
    not possible (no glibc) or refused."""
    mallopt = _libc()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, mmap_max)) & bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed memory stays in the process (no mmap, no trimming); glibc's defaults after it.
    Yields whether the setting took effect."""
    applied = enabled and set_malloc(0, NEVER_TRIM)
    try:
        yield applied
    finally:
        if applied:
            set_malloc(DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
