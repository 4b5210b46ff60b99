"""Data-parallel training over the processes ``torchrun`` starts: who this process is, the few collectives the
trainer needs, and batch-norm statistics over all ranks on any backend.

A run under ``torchrun --nproc_per_node N tools/train.py ...`` is meant to *be* the one-process run on the same
global batch, split N ways, not an approximation of it:

* every global batch of ``train.batch_size`` images is cut into N consecutive slices, one per rank
  (:class:`detector.data.loader.SeededSampler` with ``rank`` / ``world_size``), and each image's augmentation
  depends only on its per-sample seed, so the images are the ones the single process would have seen;
* every count a loss divides by (positives per level, kept priors, pair weights, the batch size) is summed over
  the ranks before dividing (:attr:`DetectionCriterion.count_reducer`), so each rank's loss is its share of the
  global loss; the trainer multiplies it by N because DistributedDataParallel *averages* gradients;
* with ``train.sync_bn`` batch norm uses the statistics of the whole global batch (:func:`convert_sync_batchnorm`).

With all three, the weights after a step equal the single process's up to float summation order (the test in
``tests/engine/test_distributed.py`` checks it with two CPU processes on gloo). Without ``sync_bn`` each rank
normalises over its own slice, as YOLOv5's and ultralytics' DDP default does. Ranking losses (``ap``, ``dr``) and
the state of ``wiou`` v3 / ``ghm`` stay per rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from detector.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, TensorBoard, checkpoints and results."""
        return self.rank == 0


def context_from_env(env: Mapping[str, str] | None = None) -> DistContext:
    """The context ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; one process without them."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return DistContext()
    try:
        ctx = DistContext(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun): {err}") from None
    if ctx.world_size < 1 or not 0 <= ctx.rank < ctx.world_size:
        raise ValueError(f"RANK={ctx.rank} is not in [0, WORLD_SIZE={ctx.world_size})")
    return ctx


def select_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise torch.device(name) (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def init_distributed(device: str) -> tuple[DistContext, torch.device, bool]:
    """Join the process group ``torchrun`` set up, if any: returns (context, this rank's device, whether this call
    created the group and so must destroy it). CUDA ranks use ``cuda:LOCAL_RANK`` and NCCL; CPU ranks gloo."""
    ctx = context_from_env()
    if not ctx.enabled:
        return ctx, select_device(device), False
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if device not in ("auto", "cuda"):
            raise ConfigError("train.device", f"under torchrun each rank uses cuda:LOCAL_RANK; set 'cuda' or 'auto', "
                                              f"not {device!r}")
        torch.cuda.set_device(ctx.local_rank)
        target = torch.device("cuda", ctx.local_rank)
    else:
        target = torch.device("cpu")
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return ctx, target, created


def active() -> bool:
    """Whether collectives run (a process group with more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def all_reduce_sum(t: Tensor) -> Tensor:
    """t (Tensor[...]) summed over the ranks (a new tensor, no gradient); ``t`` itself in one process."""
    if not active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """[the object of rank 0, of rank 1, ...] (pickled through the group); ``[obj]`` in one process."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm running statistics) into every rank's ``module``, in place.

    Without ``sync_bn`` each rank updates its running statistics from its own slice in the last forward pass of
    an epoch (DDP broadcasts rank 0's only at the start of the next one), and the EMA averages them per rank; the
    trainer calls this before evaluating, so every rank scores with the weights rank 0 saves."""
    if active():
        for buf in module.buffers():
            dist.broadcast(buf, src=src)


def barrier() -> None:
    if active():
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is the sum over ranks of the gradients (each rank's loss reads the sum)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole global batch, on any backend (gloo on CPU
    included, where torch's SyncBatchNorm refuses to run).

    Two differentiable all-reduces per call: the per-channel sum and count, then the
    sum of squared deviations from the global mean (two passes, as the one-process layer computes its variance).
    The gradient flows back through both, so each rank's input gradient includes what the other ranks' losses
    contribute through the shared statistics. Running statistics follow BatchNorm2d: momentum update with the
    unbiased variance. Evaluation and one-process training are BatchNorm2d's own.
    """

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, H, W)
        if not (self.training and active()):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = (0, 2, 3)
        count = x.new_full((1,), x.numel() / x.shape[1])
        first = all_reduce(torch.cat((x.sum(dims), count)))  # (C + 1,) summed over ranks
        n = first[-1]
        mean = first[:-1] / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n  # (C,) biased, as used to normalise
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``model`` computing its statistics over all ranks: torch's SyncBatchNorm on CUDA,
    :class:`GlobalBatchNorm` elsewhere (weights, biases and running statistics carried over)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(device=next(child.buffers()).device if list(child.buffers()) else device)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model
