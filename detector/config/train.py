"""Schema sections of a run: ``train`` (optimisation, schedule, EMA, bookkeeping) and ``eval``."""
from __future__ import annotations

from dataclasses import dataclass

from detector.config.fields import _check_device, _in_range, _non_empty, _opt


@dataclass
class TrainConfig:
    """Optimisation, schedule, EMA and run bookkeeping."""

    epochs: int = _opt(100, check=_in_range(1))
    """Number of training epochs."""
    batch_size: int = _opt(16, check=_in_range(1))
    """Images per training batch, over all processes: under ``torchrun`` each of the N ranks takes
    ``batch_size / N`` of every batch (YOLOv5's and ultralytics' convention)."""
    optimizer: str = _opt("sgd", choices=("sgd", "adamw", "adam"))
    """Optimizer: sgd (with momentum), adamw or adam (beta1 = momentum)."""
    lr0: float = _opt(0.01, check=_in_range(0.0, lo_open=True))
    """Initial learning rate."""
    lrf: float = _opt(0.01, check=_in_range(0.0, 1.0, lo_open=True))
    """Final learning rate as a fraction of ``lr0``."""
    momentum: float = _opt(0.937, check=_in_range(0.0, 1.0, hi_open=True))
    """SGD momentum / Adam beta1."""
    nesterov: bool = _opt(True)
    """Use Nesterov momentum with SGD."""
    weight_decay: float = _opt(0.0005, check=_in_range(0.0))
    """Weight decay of conv/linear weights (not biases or norm weights), scaled by ``batch_size * accumulate / nbs``."""
    nbs: int = _opt(64, check=_in_range(1))
    """Nominal batch size: gradients are accumulated over ``round(nbs / batch_size)`` batches."""
    warmup_epochs: float = _opt(3.0, check=_in_range(0.0))
    """Length of the linear warmup in epochs (YOLOv5 uses at least 100 iterations)."""
    warmup_momentum: float = _opt(0.8, check=_in_range(0.0, 1.0, hi_open=True))
    """Momentum at the start of warmup, ramping to ``momentum``."""
    warmup_bias_lr: float = _opt(0.1, check=_in_range(0.0))
    """Bias learning rate at the start of warmup, ramping down to the scheduled rate."""
    schedule: str = _opt("linear", choices=("linear", "cosine"))
    """Learning-rate decay from ``lr0`` to ``lr0 * lrf`` over the epochs."""
    ema: bool = _opt(True)
    """Keep an exponential moving average of the weights; evaluate and save the EMA model."""
    ema_decay: float = _opt(0.9999, check=_in_range(0.0, 1.0, lo_open=True, hi_open=True))
    """EMA decay after its ramp-up: ``d = ema_decay * (1 - exp(-updates / ema_tau))``."""
    ema_tau: float = _opt(2000.0, check=_in_range(0.0, lo_open=True))
    """EMA ramp-up time constant in optimizer updates."""
    amp: bool = _opt(True)
    """Mixed-precision training on CUDA: the forward pass autocast to ``amp_dtype``."""
    amp_dtype: str = _opt("float16", choices=("float16", "bfloat16"))
    """Autocast dtype on CUDA: float16 (YOLOv5's, with a gradient scaler) or bfloat16 (no scaler needed)."""
    cpu_amp: bool = _opt(False)
    """bfloat16 autocast on CPU (processors with AVX512-BF16 or AMX); off by default, see docs/benchmarks.md for
    its speed and accuracy."""
    channels_last: bool = _opt(True)
    """Use the channels-last memory format (CUDA and CPU)."""
    compile: bool = _opt(False)
    """``torch.compile`` the model for the training forward and backward (inductor, default mode; evaluation and
    checkpoints use the plain model). Compiling takes minutes; on this project's 2-core CPUs the step did not get
    faster (docs/benchmarks.md), on GPUs it is unmeasured here: time it with ``benchmarks/bench_train.py --set
    train.compile=true`` before a long run."""
    grad_clip: float | None = _opt(10.0, check=_in_range(0.0, lo_open=True))
    """Clip the gradient norm to this value before each optimizer step; null = no clipping."""
    max_bad_steps: int = _opt(0, check=_in_range(0))
    """Consecutive steps with a NaN / inf loss term that are skipped (batch saved to the run folder); the next
    one stops the run. 0 = stop at the first."""
    seed: int = _opt(0, check=_in_range(0))
    """Random seed for Python, NumPy and torch."""
    device: str = _opt("auto", check=_check_device)
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    eval_interval: int = _opt(1, check=_in_range(1))
    """Evaluate every this many epochs (and always after the last)."""
    close_mosaic: int = _opt(0, check=_in_range(0))
    """Turn mosaic off for this many final epochs."""
    out_dir: str = _opt("runs/train", check=_non_empty)
    """Folder under which run directories are created."""
    name: str = _opt("exp", check=_non_empty)
    """Run directory name inside ``out_dir`` (a numeric suffix is added if it exists)."""
    deterministic: bool = _opt(True)
    """Ask torch for deterministic algorithms where available."""
    keep_freed_memory: bool = _opt(True)
    """On a CPU run under glibc (Linux): freed memory stays in the process instead of going back to the OS after
    every large tensor, whose fresh pages otherwise fault in each step (3-4x on the loss path; see
    ``detector/engine/allocator.py``). The process keeps its peak memory until the run ends."""
    sync_bn: bool = _opt(False)
    """Under ``torchrun``: batch-norm statistics over the whole batch of all ranks instead of each rank's share
    (torch's SyncBatchNorm on CUDA, :class:`detector.engine.distributed.GlobalBatchNorm` elsewhere)."""


@dataclass
class EvalConfig:
    """Post-processing and evaluation."""

    conf_thres: float = _opt(0.001, check=_in_range(0.0, 1.0))
    """Drop detections scoring below this before NMS."""
    iou_thres: float = _opt(0.6, check=_in_range(0.0, 1.0, lo_open=True))
    """NMS threshold: a box is suppressed when its similarity (IoU, DIoU or NWD, see ``nms``) to a kept, higher-scored
    box of its class exceeds it."""
    max_det: int = _opt(300, check=_in_range(1))
    """Keep at most this many detections per image."""
    nms: str = _opt("iou", choices=("iou", "diou", "nwd", "none", "peaks"))
    """Suppression criterion: plain IoU, DIoU (IoU minus normalised centre distance), nwd (normalized Wasserstein
    distance ``exp(-W_2 / nwd_constant)``, for tiny objects; ``iou_thres`` is then an NWD threshold), none (NMS-free
    heads: the ``max_det`` best-scoring candidates), or peaks (CenterNet: local maxima of each class map, one
    level)."""
    nwd_constant: float = _opt(12.8, check=_in_range(0.0, lo_open=True))
    """NWD's constant ``C`` in pixels of the network input, used by ``nms: nwd``: 12.8, the mean object size of
    AI-TOD (Wang et al. 2021); set it near the mean object size of the dataset."""
    variance_voting: bool = _opt(False)
    """Refine kept boxes by variance voting over their overlapping neighbours; needs ``model.box_uncertainty``."""
    batch_size: int = _opt(32, check=_in_range(1))
    """Images per evaluation batch."""
    split: str = _opt("val", choices=("train", "val", "test"))
    """Dataset split evaluated during and after training."""
    backend: str = _opt("pycocotools", choices=("pycocotools", "faster_coco_eval"))
    """What computes COCO mAP: pycocotools, or faster-coco-eval (same 12 numbers, several times faster; needs
    ``pip install -e ".[faster-coco-eval]"``). The choices are ``detector.evaluation.coco.EVAL_BACKENDS``."""
