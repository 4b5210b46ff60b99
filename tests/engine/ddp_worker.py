"""Run by ``tests/engine/test_distributed.py`` under ``torchrun`` (one process per rank).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/engine/ddp_worker.py fit OUT PRESET K=V ...
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/engine/ddp_worker.py bn OUT

``fit``: train ``PRESET`` with the overrides and write ``OUT/rank{r}.pt``: this rank's final model weights (``fit``
saves only rank 0's) and the result ``fit`` returned on this rank.
``bn``: a conv + :class:`GlobalBatchNorm` + conv net in float64 on this rank's half of a fixed batch, loss times the
world size, under DistributedDataParallel; writes ``OUT/rank{r}.pt`` with the output, the input gradient, the
parameter gradients and the running statistics, for comparison with BatchNorm2d on the whole batch.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from detector import build  # noqa: E402
from detector.config import load_config  # noqa: E402
from detector.engine.distributed import GlobalBatchNorm  # noqa: E402
from detector.engine.trainer import fit  # noqa: E402


def bn_net(norm: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), norm(4), nn.Conv2d(4, 2, 1)).double()


def bn_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """x (Tensor[4, 3, 6, 6]), target (Tensor[4, 2, 4, 4]) in float64, the same on every rank."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64),
            torch.randn(4, 2, 4, 4, generator=g, dtype=torch.float64))


def run_bn(out: Path, rank: int) -> None:
    torch.distributed.init_process_group("gloo")
    world = torch.distributed.get_world_size()
    x, target = bn_batch()
    share = slice(rank * 4 // world, (rank + 1) * 4 // world)
    model = bn_net(GlobalBatchNorm)
    ddp = nn.parallel.DistributedDataParallel(model)
    xs = x[share].clone().requires_grad_()
    y = ddp(xs)
    (((y - target[share]) ** 2).sum() * world).backward()
    torch.save({"y": y.detach(), "x_grad": xs.grad, "grads": {n: p.grad for n, p in model.named_parameters()},
                "buffers": dict(model.named_buffers())}, out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def run_fit(out: Path, rank: int, preset: str, overrides: list[str]) -> None:
    kept = {}
    build_all = build.build_all

    def keep_parts(cfg, device, **dist):
        kept["parts"] = build_all(cfg, device, **dist)
        return kept["parts"]

    build.build_all = keep_parts
    result = fit(load_config(preset, overrides), run_dir=out / "run", progress=False)
    torch.save({"model": kept["parts"].model.state_dict(), "result": result}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    if mode == "bn":
        run_bn(out, rank)
    else:
        run_fit(out, rank, sys.argv[3], sys.argv[4:])
