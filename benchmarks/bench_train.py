#!/usr/bin/env python
"""Training and inference speed of the YOLOv5 recipe on this machine, printed as a table.

For each model size: one training step (forward, assignment + composite loss, backward, SGD step) on a batch of
real coco128 images, and inference (forward + decode + NMS) per image, both after warm-up; peak CUDA memory on GPU.

    python benchmarks/bench_train.py                           # n and s, 320 px, batch 8 on CPU (16 on CUDA)
    python benchmarks/bench_train.py --sizes n --img-size 640 --batch-size 16 --steps 20 --device cuda
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from detector import build
from detector.config import load_config
from detector.engine.trainer import predict, select_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_size(size: str, args, device: torch.device) -> dict:
    cfg = load_config("yolov5_ciou", [f"model.size={size}", f"data.img_size={args.img_size}", "data.workers=0",
                                      f"train.batch_size={args.batch_size}", f"eval.batch_size={args.batch_size}"])
    dataset = build.build_dataset(cfg, "train")
    loader = build.build_loader(cfg, dataset, train=True)
    batch = next(iter(loader))
    model = build.build_model(cfg, len(dataset.names)).to(device)
    criterion = build.build_criterion(cfg, len(dataset.names))
    coder = build.build_coder(cfg)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    images = batch.images.to(device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = batch.targets.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=cuda)

    def step() -> None:
        with torch.autocast(device.type, enabled=cuda):
            outputs = model(images)
        losses = criterion(outputs, targets)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.step(opt)
        scaler.update()

    model.train()
    for _ in range(args.warmup):
        step()
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    train_s = (time.perf_counter() - t) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")

    model.eval()
    for _ in range(args.warmup):
        predict(model, coder, images, cfg.eval)
    sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        with torch.autocast(device.type, enabled=cuda):
            predict(model, coder, images, cfg.eval)
    sync(device)
    infer_s = (time.perf_counter() - t) / args.steps
    return {
        "size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "train_ms_per_step": 1000 * train_s,
        "train_img_per_s": args.batch_size / train_s,
        "infer_ms_per_img": 1000 * infer_s / args.batch_size,
        "peak_mib": peak,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["n", "s"])
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 16 on CUDA")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = select_device(args.device)
    args.batch_size = args.batch_size or (16 if device.type == "cuda" else 8)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; img {args.img_size}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; conf 0.001 NMS for inference")
    print(f"{'size':<5}{'params':>12}{'train ms/step':>15}{'train img/s':>13}{'infer ms/img':>14}{'peak MiB':>10}")
    for size in args.sizes:
        r = bench_size(size, args, device)
        print(f"{r['size']:<5}{r['params']:>12,}{r['train_ms_per_step']:>15.1f}{r['train_img_per_s']:>13.1f}"
              f"{r['infer_ms_per_img']:>14.2f}{r['peak_mib']:>10.0f}")


if __name__ == "__main__":
    main()
