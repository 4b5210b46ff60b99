"""Which autocast dtype and memory format a run trains with on its device, and whether its model is compiled.

* CUDA: ``train.amp`` autocasts the forward pass to ``train.amp_dtype`` (float16, YOLOv5's, with a gradient
  scaler; or bfloat16, which needs none).
* CPU: ``train.cpu_amp`` autocasts to bfloat16 (fast on processors with AVX512-BF16 or AMX; off by default:
  ``docs/benchmarks.md`` has its speed and accuracy on this project's machines).
* ``train.channels_last`` on both: measured on a 2-core AVX-512 EPYC (yolov5n, batch 16, 2 threads, one process,
  interleaved), the training step took 0.79x (320 px) and 0.82x (640 px) the time of the contiguous layout.

``train.compile`` wraps the training model in ``torch.compile`` (:func:`training_model`).

Loss terms are always computed in float32 (:func:`detector.engine.evaluate.float32_outputs`).
"""
from __future__ import annotations

import torch

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def precision(tc, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None for float32, channels_last)`` of the train config ``tc`` on ``device``.

    >>> from types import SimpleNamespace as NS
    >>> tc = NS(amp=True, amp_dtype="float16", cpu_amp=False, channels_last=True)
    >>> precision(tc, torch.device("cpu"))
    (None, True)
    >>> precision(NS(amp=True, amp_dtype="bfloat16", cpu_amp=True, channels_last=False), torch.device("cpu"))
    (torch.bfloat16, False)
    """
    if device.type == "cuda":
        dtype = AMP_DTYPES[tc.amp_dtype] if tc.amp else None
    elif device.type == "cpu":
        dtype = torch.bfloat16 if tc.cpu_amp else None
    else:
        dtype = None
    return dtype, bool(tc.channels_last) and device.type in ("cuda", "cpu")


def training_model(model: torch.nn.Module, tc) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself, or ``torch.compile(model)`` under ``train.compile``.

    ``model`` may be wrapped in DistributedDataParallel already (compiling the wrapper is what PyTorch recommends);
    the plain module's parameters are shared, so the optimizer, the EMA and the checkpoints keep using the plain
    module and its state-dict keys (no ``_orig_mod.`` prefix)."""
    return torch.compile(model) if tc.compile else model
