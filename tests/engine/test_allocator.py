"""keep_freed_memory: with glibc, a large tensor allocated again after being freed faults no fresh pages in (the
cost it removes from every CPU training step). Each case runs in a fresh interpreter: glibc's state is per process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detector.engine.allocator import _libc

pytestmark = pytest.mark.skipif(sys.platform != "linux" or _libc() is None, reason="needs glibc's mallopt (Linux)")

SCRIPT = """
import resource, sys, torch
from detector.engine.allocator import keep_freed_memory

def faults(rounds=4):  # minor page faults of 4 x (allocate, fill, free) a 64 MB tensor, after one warm-up
    torch.ones(16 * 2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with keep_freed_memory(sys.argv[1] == "keep") as applied:
    for _ in range(3):
        faults()  # the heap grows to its working size (more than one round on some machines)
    print(int(applied), faults())
"""
PAGES = 4 * 64 * 2**20 // 4096  # what four fresh 64 MB tensors fault in with 4 KB pages


def _run(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    return bool(int(out[0])), int(out[1])


def test_freed_memory_is_reused_without_page_faults():
    applied, faults = _run("keep")
    assert applied and faults < 0.3 * PAGES, faults  # at most one of the four tensors fresh (measured: none)


def test_glibc_defaults_fault_every_large_tensor_in():
    """The cost itself: above glibc's largest automatic mmap threshold (32 MB) each tensor is a fresh mapping."""
    applied, faults = _run("default")
    assert not applied and faults > 0.5 * PAGES, faults
